"""bfloat16 vs 8-bit (experts kept 8-bit, or dequantized at load) tokens/s on the full-size random model.

Usage: ``python -m benchmarks.int8_speed [--cache /tmp/privfilter-bench] [--lengths 128,512] [--profile]``.
Each variant loads in its own fresh process from the same cached checkpoints (written once); one text per
call, median of ``--repeats`` calls after a warm-up.
Default variants run the experts with the native kernel where it builds (``expert_kernel="auto"``); the
``-torch`` ones with torch's kernels (oneDNN-packed bf16; per-expert dequantization for 8-bit).
``int8-keep-f32`` (opt-in, not the default) runs the kept experts' matmuls in float32, skipping the bfloat16
rounding pass. ``--profile`` prints where the kept 8-bit path spends its time at the first length.

Agreement: every variant also returns its logits for the first length, and the 8-bit variants are compared
with ``int8-dequantize`` (the reference dequantization, rounded to bf16 at load) and with ``int8-float32`` (the
same 8-bit weights, dequantized and run in float32) when those ran: mean and max |difference| of the logits, the
max's ratio to the logits' spread, and argmax agreement. (On the random full-size model any rounding difference
grows through the layers, so these say more side by side than alone.)
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import setup_environment
from .checkpoints import ensure

VARIANTS = {"bf16": ("hf", {}), "bf16-torch": ("hf", {"expert_kernel": "torch"}),
            "int8-keep": ("mlx-8bit", {"quantized_experts": "keep"}),
            "int8-keep-torch": ("mlx-8bit", {"quantized_experts": "keep", "expert_kernel": "torch"}),
            "int8-dequantize": ("mlx-8bit", {"quantized_experts": "dequantize"}),
            "int8-keep-f32": ("mlx-8bit", {"quantized_experts": "keep", "expert_precision": "float32"}),
            "int8-float32": ("mlx-8bit", {"dtype": "float32"})}
DEFAULT_VARIANTS = ("bf16", "bf16-torch", "int8-keep", "int8-keep-torch", "int8-dequantize")


def child(variant: str, folder: str, lengths: list[int], repeats: int, profile: bool, logits_path: str) -> dict:
    import numpy as np
    import torch

    from spacy_privfilter.backends import load_backend

    start = time.perf_counter()
    backend = load_backend(folder, backend="torch", device="cpu", **VARIANTS[variant][1])
    out: dict = {"variant": variant, "load_s": time.perf_counter() - start, "tokens_per_s": {}}
    rng = np.random.default_rng(0)
    for length in lengths:
        ids = rng.integers(0, 200000, (1, length))
        mask = np.ones_like(ids, dtype=bool)
        first = backend.logits(ids, mask)
        if length == lengths[0]:
            np.save(logits_path, np.asarray(first, dtype=np.float32))
        seconds = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            backend.logits(ids, mask)
            seconds.append(time.perf_counter() - t0)
        out["tokens_per_s"][str(length)] = length / statistics.median(seconds)
    if profile:
        ids = rng.integers(0, 200000, (1, lengths[0]))
        with torch.profiler.profile() as prof:
            for _ in range(3):
                backend.logits(ids, np.ones_like(ids, dtype=bool))
        out["profile"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.int8_speed", description=__doc__)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/privfilter-bench"))
    parser.add_argument("--lengths", default="128,512")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help=f"of {', '.join(VARIANTS)}")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "CHECKPOINT", "LOGITS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    setup_environment()
    lengths = [int(x) for x in args.lengths.split(",")]
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], lengths, args.repeats,
                               args.profile and args.child[0] == "int8-keep", args.child[2])))
        return 0
    results = {}
    scratch = tempfile.TemporaryDirectory(prefix="int8-speed-")
    for variant in args.variants.split(","):
        folder = ensure(args.cache, "full", VARIANTS[variant][0])
        cmd = [sys.executable, "-m", "benchmarks.int8_speed", "--lengths", args.lengths, "--repeats",
               str(args.repeats), "--child", variant, str(folder), f"{scratch.name}/{variant}.npy"]
        cmd += ["--profile"] if args.profile else []
        results[variant] = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True)
                                      .stdout.strip().splitlines()[-1])
        profile = results[variant].pop("profile", None)
        print(json.dumps(results[variant]), flush=True)
        if profile:
            print(profile, flush=True)
    if "bf16" in results:
        for variant, result in results.items():
            ratios = {n: rate / results["bf16"]["tokens_per_s"][n] for n, rate in result["tokens_per_s"].items()}
            print(f"{variant}: " + ", ".join(f"{n} tokens {r:.2f}x bf16" for n, r in ratios.items()))
    for line in agreement({v: np.load(f"{scratch.name}/{v}.npy") for v in results}):
        print(line)
    scratch.cleanup()
    return 0


def agreement(logits: dict) -> list[str]:
    """The 8-bit variants' logits against int8-dequantize and int8-float32 (those that ran)."""
    lines = []
    for reference in ("int8-dequantize", "int8-float32"):
        if reference not in logits:
            continue
        want = logits[reference]
        spread = float(want.std())
        for variant, got in logits.items():
            if variant == reference or not variant.startswith("int8"):
                continue
            diff = np.abs(got - want)
            agree = float((got.argmax(-1) == want.argmax(-1)).mean())
            lines.append(f"{variant} vs {reference}: |logit difference| mean {diff.mean():.4f}, max {diff.max():.4f} "
                         f"({diff.max() / spread:.4f} of the logits' std), argmax agreement {agree:.2%} of "
                         f"{want.shape[-2]} tokens")
    return lines


if __name__ == "__main__":
    sys.exit(main())
