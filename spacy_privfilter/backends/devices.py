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
