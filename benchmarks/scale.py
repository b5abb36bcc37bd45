"""``python -m benchmarks.scale``: rows/s and tokens/s of each engine with 1 and 2 workers vs local ``nlp.pipe``.

Rows have two text columns (a short subject and a realistic 100-2,000-token body from ``workloads``). Each
engine session is started once; a small warm-up job loads the model in its workers (Ray Data builds a new actor
pool per job, so its figures include loading the model in each actor). Peak RSS is sampled from the engine's
worker processes (descendants of this process running Python) every 0.2 s; the largest is reported.
Results: ``benchmarks/results/scale-<size>.md`` and ``.json``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import threading
import time
from pathlib import Path

from . import CACHE_DIR, RESULTS_DIR, setup_environment
from .checkpoints import ensure
from .workloads import build_workloads, count_tokens, get_encoding

ENGINES = ("local", "spark", "ray", "dask")


class WorkerPeak(threading.Thread):
    """Samples the resident memory of this process's Python descendants (the engine's workers)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_mb, self._done = 0.0, threading.Event()

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._done.wait(0.2):
            for proc in me.children(recursive=True):
                try:
                    # Python workers and Ray actors ("ray::..."); not the JVM or Ray's own daemons
                    if proc.name().startswith("python") or " ".join(proc.cmdline()).startswith("ray::"):
                        self.peak_mb = max(self.peak_mb, proc.memory_info().rss / 2**20)
                except (psutil.Error, OSError):
                    continue

    def stop(self) -> float:
        self._done.set()
        self.join()
        return self.peak_mb


def make_table(rows: int, seed: int):
    import pyarrow as pa

    docs = build_workloads(n_documents=rows, seed=seed, stream_tokens=0).documents
    subjects = [f"Re: case {i} for {doc.split()[0]}" for i, doc in enumerate(docs)]
    encoding = get_encoding()
    tokens = sum(count_tokens(encoding, t) for t in subjects + docs)
    table = pa.table({"row": list(range(rows)), "subject": subjects, "body": docs})
    return table, tokens


def measure_local_pipe(model: Path, table, threads: int) -> dict:
    import spacy
    import torch

    torch.set_num_threads(threads)
    nlp = spacy.blank("xx")
    nlp.add_pipe("privacy_filter", config={"model": str(model)})
    nlp.add_pipe("privacy_redactor")
    nlp.get_pipe("privacy_filter").initialize(nlp=nlp)
    list(nlp.pipe(["warm up the model"]))
    texts = table.column("subject").to_pylist() + table.column("body").to_pylist()
    start = time.perf_counter()
    for _ in nlp.pipe(texts, batch_size=16):
        pass
    return {"seconds": time.perf_counter() - start}


def measure_engine(name: str, workers: int, model: Path, table) -> dict:
    from spacy_privfilter.scale import PipelineSpec, TableJob, share_of_cores, start_engine

    spec = PipelineSpec({"model": str(model)}, {}, batch_size=16, threads=share_of_cores(workers))
    job = TableJob(spec, ("subject", "body"), row_id_column="row")
    peak = WorkerPeak()
    peak.start()
    engine = start_engine(name, workers)
    try:
        engine.scrub(table.slice(0, 2 * workers), job)  # warm-up: workers load the model
        start = time.perf_counter()
        out = engine.scrub(table, job)
        seconds = time.perf_counter() - start
    finally:
        engine.close()
    assert out.column("row").to_pylist() == table.column("row").to_pylist()
    worker_peak = peak.stop()
    if name == "local":  # the worker is this process
        from .measure import peak_rss_mb

        worker_peak = peak_rss_mb()
    return {"seconds": seconds, "peak_worker_rss_mb": round(worker_peak, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=120)
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--engines", nargs="*", default=list(ENGINES))
    parser.add_argument("--workers", nargs="*", type=int, default=[1, 2])
    args = parser.parse_args(argv)
    setup_environment()
    model = ensure(CACHE_DIR, args.size, "hf")
    table, tokens = make_table(args.rows, seed=0)
    results = []
    for threads in args.workers:
        figures = measure_local_pipe(model, table, threads) if "local" in args.engines else None
        if figures:
            results.append({"engine": "nlp.pipe (in-process)", "workers": 1, "threads": threads, **figures})
            print(json.dumps(results[-1]), flush=True)
    for name in args.engines:
        for workers in args.workers:
            if name == "local" and workers > 1:
                continue
            results.append({"engine": name, "workers": workers, **measure_engine(name, workers, model, table)})
            print(json.dumps(results[-1]), flush=True)
    base = next(r["seconds"] for r in results if r["engine"].startswith("nlp.pipe"))
    for r in results:
        r["rows_per_s"] = round(args.rows / r["seconds"], 2)
        r["tokens_per_s"] = round(tokens / r["seconds"], 1)
        r["vs_nlp_pipe"] = round(base / r["seconds"], 2)
        r["seconds"] = round(r["seconds"], 2)
    meta = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "rows": args.rows,
            "texts_per_row": 2, "tokens": tokens, "size": args.size, "cores": os.cpu_count()}
    RESULTS_DIR.mkdir(exist_ok=True)
    stem = RESULTS_DIR / f"scale-{args.size}"
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    lines = [f"# Scaling out ({args.size} random checkpoint, {meta['cores']} cores)", "",
             f"- Date: {meta['date']}; {args.rows} rows x 2 text columns, {tokens:,} tokens; one run each",
             "- One run per figure on whatever else the machine is doing: compare ratios within one run only.",
             "- vs nlp.pipe: speed relative to the first row (in-process nlp.pipe, 1 torch thread)", "",
             "| engine | workers | threads | rows/s | tokens/s | vs nlp.pipe | peak worker RSS MiB |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['engine']} | {r['workers']} | {r.get('threads', '')} | {r['rows_per_s']} | "
                     f"{r['tokens_per_s']:,.0f} | {r['vs_nlp_pipe']}x | {r.get('peak_worker_rss_mb', '')} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
