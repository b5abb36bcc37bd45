"""Seconds per fine-tuning step and peak RSS on the full-size architecture with random weights (CPU).

Usage: ``python -m benchmarks.train_step --mode head|lora [--batch 8] [--seq 256] [--steps 3]`` (Linux: the
memory figures come from ``/proc/self/status``). One mode per process, so that the peak RSS belongs to it. The model is built straight from seeded random tensors (no file),
in bfloat16 when this CPU runs bf16 matmuls natively (as ``train`` would choose), and each step is the very
``train_step`` that ``spacy_privfilter.training.train`` runs.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import time
from pathlib import Path

import torch


def main() -> None:
    from spacy_privfilter.backends.torch_backend import build_model, cpu_runs_fast
    from spacy_privfilter.testing import RandomStateDict, full_config
    from spacy_privfilter.training.torch_train import IGNORE, train_step
    from spacy_privfilter.training.torch_lora import prepare_model

    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("head", "lora", "full"), required=True)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--no-checkpointing", action="store_true")
    args = parser.parse_args()

    config = full_config()
    dtype = torch.bfloat16 if cpu_runs_fast(torch.bfloat16) and args.mode != "full" else torch.float32
    begin = time.perf_counter()
    model = build_model(RandomStateDict(config), config, dtype=dtype, device="cpu", pack_experts=False,
                        expert_kernel="torch")
    params = prepare_model(model, args.mode, rank=args.rank)
    built_s = time.perf_counter() - begin
    # Drawing the random tensors leaves freed float32 buffers in the heap: hand them back, then start the peak
    # afresh, so that the figure is what training holds (model, optimiser state, activations), not the build.
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    model_rss = _status_gib("VmRSS")
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    rng = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size - 1, (args.batch, args.seq), generator=rng)
    tags = torch.randint(0, config.num_labels, (args.batch, args.seq), generator=rng)
    tags[-1, args.seq // 2:] = IGNORE  # some padding, as real batches have
    ids[-1, args.seq // 2:] = config.pad_token_id
    times, cpu_times, losses = [], [], []
    for _ in range(args.steps + 1):  # the first step also allocates the optimiser state: not timed
        start, cpu_start = time.perf_counter(), time.process_time()
        losses.append(train_step(model, optimizer, params, ids, tags, body_grad=args.mode != "head",
                                 checkpointing=not args.no_checkpointing, bf16=dtype == torch.bfloat16))
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    print(json.dumps({"mode": args.mode, "dtype": str(dtype).replace("torch.", ""), "batch": args.batch,
                      "seq": args.seq, "threads": torch.get_num_threads(),
                      "trainable_parameters": sum(p.numel() for p in params),
                      "build_s": round(built_s, 1), "model_rss_gib": round(model_rss, 2),
                      "seconds_per_step": round(sum(times[1:]) / args.steps, 2), "first_step_s": round(times[0], 2),
                      # CPU seconds (all threads): less sensitive than wall time to other jobs on the machine
                      "cpu_seconds_per_step": round(sum(cpu_times[1:]) / args.steps, 2),
                      "peak_rss_gib": round(_status_gib("VmHWM"), 2), "losses": [round(x, 3) for x in losses]}))


def _status_gib(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last reset) of this process, in GiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2 ** 20  # kB
    raise RuntimeError(f"/proc/self/status has no {field}")


if __name__ == "__main__":
    main()
