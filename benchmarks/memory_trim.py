"""Resident memory over a long ``nlp.pipe`` run, with and without trimming the heap between batches.

Usage: ``python -m benchmarks.memory_trim [--docs 200] [--batch-size 8] [--cache /tmp/privfilter-bench]``.
Each mode runs in its own fresh process on the same mid-size random checkpoint (the full architecture with
4 layers and 32 experts, bfloat16) and the same generated documents (100-2,000 tokens each); RSS is read
after every document. Prints peak and final RSS per mode and the ratio of the growth above the loaded model.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from . import setup_environment
from .measure import rss_mb

MID_SIZE = dict(num_hidden_layers=4, num_local_experts=32)


def checkpoint(cache: Path) -> Path:
    from spacy_privfilter.testing import full_config, write_random_checkpoint

    folder = cache / "mid-hf"
    if not (folder / "config.json").is_file():
        write_random_checkpoint(folder, full_config(**MID_SIZE), format="hf", seed=7, dtype="bfloat16")
    return folder


def child(mode: str, folder: Path, docs_file: Path, batch_size: int) -> dict:
    import spacy

    from spacy_privfilter.memory import HeapTrimmer

    if mode == "off":
        HeapTrimmer.after_batch = lambda self: False  # the baseline: the allocator keeps what it has
    texts = json.loads(docs_file.read_text(encoding="utf-8"))
    nlp = spacy.blank("en")
    nlp.add_pipe("privacy_filter", config={"model": str(folder), "backend": "torch", "device": "cpu"})
    nlp("warm up")  # the model loads lazily
    loaded = rss_mb()
    samples, start = [], time.perf_counter()
    for _ in nlp.pipe(texts, batch_size=batch_size):
        samples.append(rss_mb())
    return {"mode": mode, "model_rss_mb": loaded, "peak_rss_mb": max(samples), "final_rss_mb": samples[-1],
            "seconds": time.perf_counter() - start, "trims": nlp.get_pipe("privacy_filter")._trimmer.trims}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory_trim", description=__doc__)
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/privfilter-bench"))
    parser.add_argument("--child", nargs=3, metavar=("MODE", "CHECKPOINT", "DOCS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    setup_environment()
    if args.child:
        mode, folder, docs = args.child
        print(json.dumps(child(mode, Path(folder), Path(docs), args.batch_size)))
        return 0
    from .workloads import build_workloads

    args.cache.mkdir(parents=True, exist_ok=True)
    folder = checkpoint(args.cache)
    docs_file = args.cache / f"memory-docs-{args.docs}.json"
    docs_file.write_text(json.dumps(build_workloads(n_documents=args.docs, seed=11, stream_tokens=100).documents),
                         encoding="utf-8")
    results = {}
    for mode in ("off", "on"):
        out = subprocess.run([sys.executable, "-m", "benchmarks.memory_trim", "--batch-size", str(args.batch_size),
                              "--child", mode, str(folder), str(docs_file)], capture_output=True, text=True,
                             check=True)
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps(results[mode]))
    growth = {mode: r["peak_rss_mb"] - r["model_rss_mb"] for mode, r in results.items()}
    print(f"{args.docs} docs, batch size {args.batch_size}: peak RSS {results['off']['peak_rss_mb']:.0f} MiB "
          f"without trimming, {results['on']['peak_rss_mb']:.0f} MiB with ({results['on']['trims']} trims); "
          f"growth above the loaded model {growth['off']:.0f} -> {growth['on']:.0f} MiB "
          f"(ratio {growth['on'] / max(growth['off'], 1.0):.2f}); time ratio on/off "
          f"{results['on']['seconds'] / results['off']['seconds']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
