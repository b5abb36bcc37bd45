"""``python -m benchmarks [--quick] [--device cpu|cuda] [--only NAME ...]``: every figure the README quotes.

The parent process only orchestrates: it generates the workloads, makes sure the random checkpoints are
cached, then starts one subprocess per contender and job (so peak RSS is attributable) and writes
``<out>/<device>[-quick].md``, ``.png`` and ``.json``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import CACHE_DIR, RESULTS_DIR, setup_environment
from .checkpoints import checkpoint_dir
from .contenders import CONTENDERS, Contender, missing_requirement
from .measure import summarize
from .report import render_markdown, render_plot
from .workloads import build_workloads, count_tokens, get_encoding

WORKLOADS = ("scaling", "paired", "pipe", "cold")
# The paired workload: these two in one process, runs alternating (the 8-bit / bf16 ratios of issue 18).
PAIRED = ("torch-bf16", "torch-int8")
FULL_LENGTHS = (128, 512, 2048, 4096, 8192, 32768)
QUICK_LENGTHS = (128, 512, 2048)
# OpenMed's MLX runtime runs a few tokens/s on a Linux CPU: it is in the full run only.
QUICK_CONTENDERS = ("torch-bf16", "torch-int8", "mlx-int8", "hf-eager", "hf-grouped_mm")
# torch-int8 is the cold-start target of issue 18 (import + load 8-bit + first 128-token document <= 3 s).
QUICK_PIPE, QUICK_COLD = ("torch-bf16",), ("torch-bf16", "torch-int8", "hf-eager")
COLD_TOKENS = 128  # the cold start's first document: this many model tokens


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer lengths, contenders and documents (< 5 min)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--only", nargs="*", default=[], metavar="NAME",
                        help=f"contenders ({', '.join(c.name for c in CONTENDERS)}) and/or workloads "
                             f"({', '.join(WORKLOADS)}); comma or space separated")
    parser.add_argument("--size", choices=("full", "tiny"), default="full",
                        help="model size (tiny: smoke tests)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads per contender")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (median, min, max)")
    parser.add_argument("--lengths", type=_int_list, default=None, help="single-text lengths, e.g. 128,512")
    parser.add_argument("--docs", type=int, default=None,
                        help="documents for nlp.pipe (default 500; quick 36)")
    parser.add_argument("--batch-sizes", type=_int_list, default=(1, 8, 64), help="nlp.pipe batch sizes")
    parser.add_argument("--cold-runs", type=int, default=None,
                        help="cold starts per contender (default 3; quick 1)")
    parser.add_argument("--cold-python", default=None, metavar="PYTHON",
                        help="interpreter for our cold starts (default: this one). A venv with only "
                             "'pip install spacy-privfilter[torch]' measures what a user pays: this venv's test "
                             "extras register spaCy entry points (presidio alone adds ~2 s to spacy.blank)")
    parser.add_argument("--max-run-s", type=float, default=None,
                        help="skip a length whose one run is projected to take longer (default 60; quick 20)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the table, plot and JSON")
    parser.add_argument("--cache", type=Path, default=CACHE_DIR, help="folder for the random checkpoints")
    args = parser.parse_args(argv)
    args.command = "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv)
    args.only = [name for item in args.only for name in item.split(",") if name]
    known = {c.name for c in CONTENDERS} | set(WORKLOADS)
    unknown = [name for name in args.only if name not in known]
    if unknown:
        parser.error(f"unknown --only name(s) {', '.join(unknown)}; choose from {', '.join(sorted(known))}")
    args.lengths = tuple(args.lengths or (QUICK_LENGTHS if args.quick else FULL_LENGTHS))
    args.docs = args.docs or (36 if args.quick else 500)
    args.cold_runs = args.cold_runs or (1 if args.quick else 3)
    args.max_run_s = args.max_run_s or (20.0 if args.quick else 60.0)
    return args


def _int_list(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x)


def select(args: argparse.Namespace) -> tuple[list[Contender], dict[str, dict], set[str]]:
    """Contenders to run, the table entries of all of them (skips included), and the workloads to run."""
    names = {n for n in args.only if n not in WORKLOADS}
    workloads = {n for n in args.only if n in WORKLOADS} or set(WORKLOADS)
    entries, chosen = {}, []
    for contender in CONTENDERS:
        if names and contender.name not in names:
            continue
        if not names and args.quick and contender.name not in QUICK_CONTENDERS:
            continue
        entry = entries[contender.name] = {"label": contender.label, "status": "ok"}
        missing = missing_requirement(contender)
        if args.device not in contender.devices:
            entry.update(status="skipped", reason=f"does not run on {args.device}")
        elif missing:
            entry.update(status="skipped", reason=f"'{missing}' is not installed")
        else:
            chosen.append(contender)
    return chosen, entries, workloads


def cuda_problem() -> str | None:
    """Why ``--device cuda`` cannot run here (no torch, or torch sees no CUDA device), or None when it can."""
    from spacy_privfilter._compat import has_torch
    from spacy_privfilter.backends.devices import missing_torch_device

    if not has_torch():
        return "torch is not installed"
    return missing_torch_device("cuda")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and (problem := cuda_problem()) is not None:
        # Nothing is measured, so nothing is written: a CPU-only machine must not leave an empty cuda report.
        print(f"benchmarks: skipped --device cuda: {problem}; run on a machine with a CUDA GPU "
              "(or use --device cpu)", file=sys.stderr)
        return 0
    setup_environment()
    os.environ.update({k: str(args.threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")})
    contenders, entries, workloads = select(args)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / (args.device + ("-quick" if args.quick else ""))
    with tempfile.TemporaryDirectory(prefix="privfilter-bench-") as tmp:
        run = Runner(args, Path(tmp))
        results = run.all(contenders, entries, workloads, lambda partial: write(partial, stem))
    write(results, stem)
    print(render_markdown(results))
    print(f"wrote {stem}.md, {stem}.png, {stem}.json", file=sys.stderr)
    return 0


def write(results: dict, stem: Path) -> None:
    """Table, plot and JSON; also called after each contender, so an interrupted run leaves its figures."""
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    stem.with_suffix(".md").write_text(render_markdown(results), encoding="utf-8")
    render_plot(results, stem.with_suffix(".png"))


class Runner:
    """Starts the subprocesses and collects their JSON."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp, self.started = args, tmp, time.perf_counter()
        self.count = 0

    def log(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.started:6.0f} s] {message}", file=sys.stderr, flush=True)

    def all(self, contenders: list[Contender], entries: dict, workloads: set[str], progress=None) -> dict:
        args = self.args
        self.log(f"generating workloads ({args.docs} documents)")
        data = build_workloads(n_documents=args.docs, stream_tokens=min(40_000, max(args.lengths)))
        self.workloads_path = self.tmp / "workloads.json"
        self.workloads_path.write_text(json.dumps(data.to_dict()), encoding="utf-8")
        encoding = get_encoding()
        first_doc = encoding.decode(data.stream_ids[:COLD_TOKENS])  # re-encodes to COLD_TOKENS tokens
        self.cold_tokens = count_tokens(encoding, first_doc)
        formats = sorted({c.checkpoint for c in contenders})
        if formats:
            self.log(f"checkpoints ({args.size}): {', '.join(formats)}")
            proc = subprocess.run([sys.executable, "-m", "benchmarks.checkpoints", str(args.cache), args.size,
                                   *formats], check=False)
            if proc.returncode:
                for c in contenders:
                    entries[c.name].update(status="failed", reason="random checkpoint could not be written")
                contenders = []
        self.log("roofline: bf16 matmul throughput")
        roof = self.job({"job": "roofline"})
        for c in contenders:
            entry, ckpt = entries[c.name], str(checkpoint_dir(args.cache, args.size, c.checkpoint))
            base = {"contender": c.name, "checkpoint_dir": ckpt, "workloads": str(self.workloads_path)}
            if "scaling" in workloads:
                self.log(f"{c.name}: single texts {', '.join(map(str, args.lengths))} + batch of 32")
                entry["scaling"] = self.job({"job": "scaling", **base, "lengths": list(args.lengths)})
            if "pipe" in workloads and c.pipe and (not args.quick or c.name in QUICK_PIPE):
                self.log(f"{c.name}: nlp.pipe, batch sizes {', '.join(map(str, args.batch_sizes))}")
                entry["pipe"] = self.job({"job": "pipe", **base, "batch_sizes": list(args.batch_sizes)})
            if "cold" in workloads and c.cold and (not args.quick or c.name in QUICK_COLD):
                self.log(f"{c.name}: cold start x {args.cold_runs}")
                entry["cold"] = self.cold(c, ckpt, first_doc)
            if progress is not None:
                progress({"meta": self.meta(roof), "roofline": _roofline(roof), "contenders": entries})
        results = {"meta": self.meta(roof), "roofline": _roofline(roof), "contenders": entries}
        chosen = {c.name: c for c in contenders}
        if "paired" in workloads and all(name in chosen for name in PAIRED):
            self.log(f"{' + '.join(PAIRED)} in one process, runs alternating: {', '.join(map(str, args.lengths))}")
            folders = [str(checkpoint_dir(args.cache, args.size, chosen[name].checkpoint)) for name in PAIRED]
            results["paired"] = self.job({"job": "paired", "contenders": list(PAIRED), "checkpoint_dirs": folders,
                                          "workloads": str(self.workloads_path), "lengths": list(args.lengths),
                                          "rounds": 2 * args.repeats + 1})
            results["meta"] = self.meta(roof)
        return results

    def job(self, spec: dict) -> dict:
        args = self.args
        spec = {"device": args.device, "threads": args.threads, "repeats": args.repeats, "size": args.size,
                "max_run_s": args.max_run_s, **spec}
        self.count += 1
        spec_path, out_path = self.tmp / f"spec{self.count}.json", self.tmp / f"out{self.count}.json"
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        try:
            subprocess.run([sys.executable, "-m", "benchmarks.worker", str(spec_path), str(out_path)],
                           check=False, timeout=1800)
        except subprocess.TimeoutExpired:
            return {"status": "failed", "reason": "timed out after 30 min"}
        if not out_path.is_file():
            return {"status": "failed", "reason": "worker died without a result (out of memory?)"}
        return json.loads(out_path.read_text(encoding="utf-8"))

    def cold(self, contender: Contender, ckpt: str, text: str) -> dict:
        runs = []
        for i in range(self.args.cold_runs):
            spec_path, out_path = self.tmp / f"cold{i}.json", self.tmp / f"cold{i}.out.json"
            spec_path.write_text(json.dumps({"kind": contender.kind, "checkpoint_dir": ckpt, "text": text,
                                             "backend": contender.backend, "dtype": contender.dtype,
                                             "experts": contender.experts, "device": self.args.device}),
                                 encoding="utf-8")
            start = time.perf_counter()
            python = (self.args.cold_python or sys.executable) if contender.kind == "project" else sys.executable
            cmd = [python, "-m", "benchmarks.coldstart", str(spec_path), str(out_path)]
            proc = subprocess.run(cmd, check=False, timeout=900)
            wall = time.perf_counter() - start
            if proc.returncode or not out_path.is_file():
                return {"status": "failed", "reason": f"exit code {proc.returncode}"}
            split = json.loads(out_path.read_text(encoding="utf-8"))
            # import + load + first document, as the child timed them (the wall adds interpreter start and
            # teardown: Python's finalization with torch loaded alone takes ~0.4 s here)
            runs.append({"wall_s": wall, "phases_s": split["import_s"] + split["load_s"] + split["first_doc_s"],
                         **split})
        keys = ("wall_s", "phases_s", "import_s", "load_s", "first_doc_s")
        return {"status": "ok", "doc_tokens": self.cold_tokens,
                **{k: summarize([r[k] for r in runs]) for k in keys}}

    def meta(self, roof: dict) -> dict:
        args = self.args
        return {"mode": "quick" if args.quick else "full", "device": args.device, "size": args.size,
                "threads": args.threads, "repeats": args.repeats, "lengths": list(args.lengths),
                "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "commit": _commit(),
                "machine": roof.get("machine", "unknown"), "model_shape": roof.get("model_shape", "unknown"),
                "command": args.command, "cold_python": args.cold_python or "this venv",
                "wall_s": round(time.perf_counter() - self.started, 1)}


def _roofline(roof: dict) -> dict | None:
    if roof.get("status") != "ok":
        return None
    gflops = max(roof["matmul_gflops"].values())
    return {"gflops": gflops, "by_shape": roof["matmul_gflops"], "flops_per_token": roof["flops_per_token"],
            "ceiling_tokens_per_s": gflops * 1e9 / roof["flops_per_token"]}


def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).parent).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True, cwd=Path(__file__).parent).stdout.strip()
        return head + ("+local changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
