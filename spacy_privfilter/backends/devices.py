"""The devices each installed runtime can see (for ``spacy-privfilter info``); frameworks load only here."""
from __future__ import annotations

from .._compat import has_mlx, has_torch


def available_devices() -> dict[str, list[str]]:
    """``{"torch": ["cpu", "cuda:0", ...], "mlx": [...]}`` for the runtimes that are installed."""
    found: dict[str, list[str]] = {}
    if has_torch():
        import torch

        found["torch"] = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            found["torch"].append("mps")
    if has_mlx():
        try:
            import mlx.core as mx

            found["mlx"] = [str(mx.default_device())]
        except Exception as exc:  # a broken mlx install should not break `info`
            found["mlx"] = [f"unavailable ({type(exc).__name__})"]
    return found


def missing_torch_device(device: str) -> str | None:
    """Why torch cannot run on ``device`` ("cuda", "cuda:N" or "mps"), or None when it can (or torch is absent:
    the missing runtime is reported, with its install line, when the model loads)."""
    if not has_torch():
        return None
    import torch

    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return None if index < count else f"device {device!r} is not available (torch sees {count} CUDA device(s))"
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        return "device 'mps' is not available on this machine"
    return None


def set_torch_threads(threads: int) -> None:
    """torch's intra-op thread count, when torch is installed (a worker's share of the machine's cores)."""
    if has_torch():
        import torch

        torch.set_num_threads(threads)
