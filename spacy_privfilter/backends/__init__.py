"""Runtime selection. Frameworks are imported only inside their backend module.

Each backend module (``torch_backend``, ``mlx_backend``) exposes
``load(info: CheckpointInfo, *, device: str, dtype: DType, quantize: int | None) -> ModelBackend``.
"""
from __future__ import annotations

import os
from typing import Any

from .._compat import INSTALL_HINTS, has_mlx, has_torch, is_apple_silicon, require
from ..errors import BackendUnavailableError, ConfigError
from .base import BACKENDS, DTYPES, Backend, DType, ModelBackend


def select_backend(backend: Backend = "auto") -> str:
    """Resolve ``"auto"``: MLX on Apple Silicon when mlx imports, otherwise torch (MLX on Linux CPU is slower)."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend != "auto":
        require(backend, f"backend={backend!r}")
        return backend
    if is_apple_silicon() and has_mlx():
        return "mlx"
    if has_torch():
        return "torch"
    if has_mlx():
        return "mlx"
    raise BackendUnavailableError(
        f"no model runtime is installed. Fix: {INSTALL_HINTS['torch']} (or on Apple Silicon: pip install mlx)")


def load_backend(model: str | os.PathLike, *, revision: str | None = None, backend: Backend = "auto",
                 device: str = "auto", dtype: DType = "auto", quantize: int | None = None,
                 **options: Any) -> ModelBackend:
    """Resolve ``model`` (folder or Hub id), read its checkpoint and load it into the chosen runtime.

    ``options`` are runtime-specific; the torch runtime takes ``quantized_experts`` (``QuantizedExpertsMode``),
    ``expert_precision`` (``ExpertPrecision``), ``pack_experts`` (None, True, False) and ``expert_kernel``
    (``ExpertKernel``).
    """
    from ..checkpoint import inspect_checkpoint, resolve_model_path

    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    name = select_backend(backend)
    info = inspect_checkpoint(resolve_model_path(model, revision=revision))
    if name == "torch":
        from . import torch_backend as module
    else:
        if options:
            raise ConfigError(f"option(s) {', '.join(sorted(options))} apply to the torch backend only")
        from . import mlx_backend as module  # type: ignore[no-redef]
    return module.load(info, device=device, dtype=dtype, quantize=quantize, **options)


__all__ = ["BACKENDS", "DTYPES", "Backend", "DType", "ModelBackend", "load_backend", "select_backend"]
