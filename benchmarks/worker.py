"""One benchmark job in its own process, so its peak RSS is its own.

Usage: ``python -m benchmarks.worker SPEC.json RESULT.json``; jobs: ``roofline``, ``scaling`` (single texts of
each length plus a padded batch of 32 short texts), ``paired`` (two contenders' single texts, runs alternating in
one process) and ``pipe`` (documents through spaCy's ``nlp.pipe``).
"""
from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from . import setup_environment
from .checkpoints import benchmark_config
from .contenders import by_name, load, quadratic_bytes
from .measure import (available_mb, flops_per_token, machine_description, matmul_gflops, peak_rss_mb,
                      reset_peak_rss, rss_mb, summarize, time_call)
from .workloads import Workloads, count_tokens, get_encoding


def main(argv: list[str]) -> int:
    setup_environment()
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    result: dict = {"job": spec["job"], "contender": spec.get("contender")}
    try:
        result.update(JOBS[spec["job"]](spec))
        result["status"] = "ok"
    except Exception as exc:  # noqa: BLE001 - a failing contender is reported, the suite goes on
        result.update(status="failed", reason=f"{type(exc).__name__}: {_first_line(exc)}")
        traceback.print_exc()
    result["peak_rss_mb"] = peak_rss_mb()  # since the reset after loading, where the job made one
    result.update(_gpu_peak(spec.get("device", "cpu")))
    Path(argv[1]).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


def _first_line(exc: Exception) -> str:
    # Exceptions from this project never carry document text; keep only the first line of third-party ones.
    return (str(exc).splitlines() or [""])[0][:300]


def roofline_job(spec: dict) -> dict:
    config = benchmark_config(spec["size"])
    rates = matmul_gflops(device=spec["device"], threads=spec.get("threads"), size=spec["size"])
    shape = (f"hidden {config.hidden_size}, {config.num_hidden_layers} layers, "
             f"{config.num_local_experts} experts top-{config.num_experts_per_tok}, "
             f"vocab {config.vocab_size}, {config.num_labels} labels")
    return {"matmul_gflops": rates, "machine": machine_description(spec["device"]),
            "flops_per_token": flops_per_token(config), "model_shape": shape}


def scaling_job(spec: dict) -> dict:
    contender = by_name(spec["contender"])
    workloads = Workloads.from_dict(json.loads(Path(spec["workloads"]).read_text(encoding="utf-8")))
    start = time.perf_counter()
    runner = load(contender, Path(spec["checkpoint_dir"]), device=spec["device"])
    # A one-token forward is part of loading: lazy loaders (MLX) only read weights when first used.
    runner.forward(workloads.single_ids(1), np.ones((1, 1), dtype=bool))
    out: dict = {"load_s": time.perf_counter() - start, "rss_after_load_mb": rss_mb(),
                 "load_peak_rss_mb": peak_rss_mb(), "lengths": {}}
    # Peaks from here on are what running costs; loading transients (mmap + copy) were recorded above.
    out["peak_reset"] = reset_peak_rss()
    warm = workloads.single_ids(min(128, spec["lengths"][0]))
    runner.forward(warm, np.ones_like(warm, dtype=bool))
    previous: tuple[int, float] | None = None  # (length, seconds per run)
    first_tps: float | None = None  # at the shortest length: the basis for the batch's time projection
    for length in spec["lengths"]:
        input_ids = workloads.single_ids(length)
        attention_mask = np.ones_like(input_ids, dtype=bool)
        skip = _skip_reason(contender, runner, spec, 1, length, previous)
        if skip:
            out["lengths"][str(length)] = {"skipped": skip}
            continue
        try:
            seconds = [time_call(lambda: runner.forward(input_ids, attention_mask))
                       for _ in range(spec["repeats"])]
        except (MemoryError, RuntimeError) as exc:  # e.g. CUDA out of memory: report it, go on to the batch
            out["lengths"][str(length)] = {"skipped": f"failed: {type(exc).__name__}"}
            _free_cuda(spec["device"])
            continue
        out["lengths"][str(length)] = {"tokens_per_s": summarize([length / s for s in seconds]),
                                       "peak_rss_mb": peak_rss_mb(), "rss_mb": rss_mb()}
        previous = (length, float(np.median(seconds)))
        first_tps = first_tps or length / previous[1]
    try:
        out["batch32"] = _batch_job(runner, workloads, spec, first_tps)
    except (MemoryError, RuntimeError) as exc:
        out["batch32"] = {"skipped": f"failed: {type(exc).__name__}"}
    out["rss_end_mb"] = rss_mb()  # while the model is still alive (after return it may be freed)
    return out


def paired_job(spec: dict) -> dict:
    """Two contenders loaded in one process, their single-text runs alternating (A then B, then B then A, ...)
    at each length. Each round's speed ratio compares two runs made within a second of each other, so drifts of
    the machine between separate processes minutes apart (other tenants of the host, where memory landed)
    cancel out of the ratio. Reports both speeds and the ratio second / first per round: median [min-max]."""
    workloads = Workloads.from_dict(json.loads(Path(spec["workloads"]).read_text(encoding="utf-8")))
    names = spec["contenders"]
    runners = [load(by_name(name), Path(folder), device=spec["device"])
               for name, folder in zip(names, spec["checkpoint_dirs"])]
    out: dict = {"contenders": names, "rounds": spec["rounds"], "lengths": {}}
    previous: tuple[int, float] | None = None  # (length, seconds of one round)
    for length in spec["lengths"]:
        if previous is not None and previous[1] * length / previous[0] > spec["max_run_s"]:
            projected = previous[1] * length / previous[0]
            out["lengths"][str(length)] = {"skipped": f"one round projected ~{projected:.0f} s > "
                                                      f"{spec['max_run_s']:.0f} s cap"}
            continue
        input_ids = workloads.single_ids(length)
        attention_mask = np.ones_like(input_ids, dtype=bool)
        for runner in runners:  # first run at a new length: kernel selection and buffers, not timed
            runner.forward(input_ids, attention_mask)
        seconds: list[list[float]] = [[], []]
        for round_ in range(spec["rounds"]):
            for i in ((0, 1) if round_ % 2 == 0 else (1, 0)):
                seconds[i].append(time_call(lambda: runners[i].forward(input_ids, attention_mask)))
        out["lengths"][str(length)] = {
            "tokens_per_s": [summarize([length / s for s in runs]) for runs in seconds],
            "ratio": summarize([a / b for a, b in zip(*seconds)])}
        previous = (length, sum(s[-1] for s in seconds))
    return out


def _batch_job(runner, workloads: Workloads, spec: dict, tokens_per_s: float | None) -> dict:
    encoding = get_encoding()
    rows = [encoding.encode(text, disallowed_special=()) for text in workloads.short_texts]
    seq = max(len(r) for r in rows)
    input_ids = np.zeros((len(rows), seq), dtype=np.int64)
    attention_mask = np.zeros((len(rows), seq), dtype=bool)
    for i, row in enumerate(rows):
        input_ids[i, :len(row)] = row
        attention_mask[i, :len(row)] = True
    tokens = int(attention_mask.sum())
    if tokens_per_s and tokens / tokens_per_s > spec["max_run_s"]:
        projected = tokens / tokens_per_s
        return {"skipped": f"one run projected ~{projected:.0f} s > {spec['max_run_s']:.0f} s cap"}
    seconds = [time_call(lambda: runner.forward(input_ids, attention_mask)) for _ in range(spec["repeats"])]
    return {"tokens_per_s": summarize([tokens / s for s in seconds]), "texts": len(rows), "tokens": tokens}


def _skip_reason(contender, runner, spec: dict, batch: int, length: int,
                 previous: tuple[int, float] | None) -> str | None:
    need_mb = quadratic_bytes(contender, batch=batch, seq=length, num_heads=runner.num_heads) / 2**20
    free_mb = _free_cuda(spec["device"]) if spec["device"] == "cuda" else available_mb()
    if need_mb and free_mb is not None and need_mb > spec.get("memory_fraction", 0.5) * free_mb:
        return f"O(T^2) attention needs ~{need_mb / 1024:.0f} GB, {free_mb / 1024:.0f} GB free"
    if previous is not None:
        exponent = 2.0 if contender.quadratic else 1.0
        projected = previous[1] * (length / previous[0]) ** exponent
        if projected > spec["max_run_s"]:
            return f"one run projected ~{projected:.0f} s > {spec['max_run_s']:.0f} s cap"
    return None


def pipe_job(spec: dict) -> dict:
    import spacy

    contender = by_name(spec["contender"])
    workloads = Workloads.from_dict(json.loads(Path(spec["workloads"]).read_text(encoding="utf-8")))
    encoding = get_encoding()
    documents = workloads.documents
    doc_tokens = [count_tokens(encoding, text) for text in documents]
    start = time.perf_counter()
    nlp = spacy.blank("en")
    nlp.add_pipe("privacy_filter", config={"model": str(spec["checkpoint_dir"]), "backend": contender.backend,
                                           "device": spec["device"], "dtype": contender.dtype})
    nlp.get_pipe("privacy_filter").initialize()  # load the model now, before any document
    model_mb = rss_mb()  # the loaded model, the basis of "peak RSS above the model" (issue 18)
    nlp(documents[0])  # tokenizer and first-forward costs (lazily read weights included)
    out: dict = {"load_s": time.perf_counter() - start, "rss_model_loaded_mb": model_mb,
                 "rss_after_load_mb": rss_mb(),
                 "load_peak_rss_mb": peak_rss_mb(), "batch_sizes": {}, "peak_reset": reset_peak_rss()}
    timer = ModelTimer.install(nlp.get_pipe("privacy_filter"))
    shards = np.array_split(np.arange(len(documents)), spec["repeats"])
    for batch_size in spec["batch_sizes"]:
        runs = []
        for shard in shards:
            texts = [documents[i] for i in shard]
            timer.seconds = 0.0
            elapsed = time_call(lambda: list(nlp.pipe(texts, batch_size=batch_size)))
            tokens = sum(doc_tokens[i] for i in shard)
            runs.append((tokens / elapsed, len(texts) / elapsed,
                         1.0 - timer.seconds / elapsed if timer.seconds else None))
        overhead = [r[2] for r in runs if r[2] is not None]
        out["batch_sizes"][str(batch_size)] = {
            "tokens_per_s": summarize([r[0] for r in runs]), "docs_per_s": summarize([r[1] for r in runs]),
            "overhead_share": summarize(overhead) if overhead else None}
    out.update(documents=len(documents), tokens=sum(doc_tokens), shards=len(shards))
    return out


class ModelTimer:
    """Wraps the component's backend ``logits`` to add up the time spent inside the model."""

    def __init__(self) -> None:
        self.seconds = 0.0

    @classmethod
    def install(cls, component) -> "ModelTimer":
        timer = cls()
        backend = find_backend(component)
        if backend is None:
            return timer
        inner = backend.logits

        def logits(input_ids, attention_mask):
            start = time.perf_counter()
            try:
                return inner(input_ids, attention_mask)
            finally:
                timer.seconds += time.perf_counter() - start

        backend.logits = logits
        return timer


def find_backend(root, depth: int = 4):
    """The first object reachable through attributes that looks like a Backend (``logits`` + ``config``)."""
    seen: set[int] = set()
    frontier = [root]
    for _ in range(depth):
        following = []
        for obj in frontier:
            if id(obj) in seen or obj is None or isinstance(obj, (str, bytes, int, float, bool)):
                continue
            seen.add(id(obj))
            if obj is not root and callable(getattr(obj, "logits", None)) and hasattr(obj, "config"):
                return obj
            following.extend(v for v in getattr(obj, "__dict__", {}).values())
        frontier = following
    return None


def _free_cuda(device: str) -> float | None:
    """Release cached CUDA blocks; returns free GPU memory in MiB (None off CUDA)."""
    if device != "cuda" or "torch" not in sys.modules:
        return None
    import torch

    torch.cuda.empty_cache()
    return torch.cuda.mem_get_info()[0] / 2**20


def _gpu_peak(device: str) -> dict:
    if device != "cuda" or "torch" not in sys.modules:
        return {}
    import torch

    return {"gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20}


JOBS = {"roofline": roofline_job, "scaling": scaling_job, "paired": paired_job, "pipe": pipe_job}

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
