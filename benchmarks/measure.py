"""Timing, memory and hardware-ceiling helpers (no framework imported at module level)."""
from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
from typing import Callable

GFLOP = 1e9


def rss_mb() -> float:
    """Current resident set size in MiB (Linux /proc; elsewhere the peak, the best available).

    smaps_rollup walks the page tables (exact); VmRSS, a counter, is the fallback.
    """
    try:
        with open(f"/proc/{os.getpid()}/smaps_rollup", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Rss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    value = _proc_status("VmRSS")
    return value if value is not None else peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    value = _proc_status("VmHWM")
    if value is not None:
        return value
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def reset_peak_rss() -> bool:
    """Reset the peak (VmHWM) to the current RSS (Linux >= 4.0), so later peaks exclude loading transients."""
    try:
        with open(f"/proc/{os.getpid()}/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def available_mb() -> float | None:
    """MemAvailable from /proc/meminfo in MiB (None where unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _proc_status(key: str) -> float | None:
    try:
        with open(f"/proc/{os.getpid()}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def time_call(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def summarize(values: list[float]) -> dict[str, float]:
    """Median, min and max of repeated measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def flops_per_token(config) -> float:
    """Forward FLOPs per token: 2 x active parameters (embedding lookup excluded) + banded attention.

    Args:
        config: a spacy_privfilter ModelConfig.
    """
    d, hd = config.hidden_size, config.head_dim
    heads, kv = config.num_attention_heads, config.num_key_value_heads
    experts, top_k, inter = config.num_local_experts, config.num_experts_per_tok, config.intermediate_size
    attention = d * heads * hd + 2 * d * kv * hd + heads * hd * d
    router = d * experts
    moe = top_k * (d * 2 * inter + inter * d)
    head = d * config.num_labels
    matmul_params = config.num_hidden_layers * (attention + router + moe) + head
    band = 2 * config.sliding_window + 1
    scores = config.num_hidden_layers * 2 * 2 * band * heads * hd  # QK^T and PV over the band
    return 2.0 * matmul_params + scores


def matmul_gflops(*, device: str, threads: int | None, size: str = "full") -> dict[str, float]:
    """Best bf16 matmul throughput of this machine, in GFLOP/s, over a few shapes the model uses."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    shapes = [(2048, 640, 1280), (2048, 640, 640), (4096, 1024, 1024)]
    if device == "cuda":
        shapes = [(8192, 8192, 8192), (32768, 640, 1280)]
    if size == "tiny":
        shapes = [(256, 256, 256)]
    best = {}
    for m, k, n in shapes:
        a = torch.randn(m, k, device=device).to(torch.bfloat16)
        b = torch.randn(k, n, device=device).to(torch.bfloat16)
        rates = []
        for _ in range(5):
            _sync(device)
            start = time.perf_counter()
            for _ in range(3):
                torch.matmul(a, b)
            _sync(device)
            rates.append(3 * 2 * m * k * n / (time.perf_counter() - start) / GFLOP)
        best[f"{m}x{k}x{n}"] = max(rates)
    return best


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def machine_description(device: str) -> str:
    """CPU model and core count (and the GPU when measuring on CUDA)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}"
    if device == "cuda":
        import torch

        text += f"; GPU: {torch.cuda.get_device_name(0)}"
    return text
