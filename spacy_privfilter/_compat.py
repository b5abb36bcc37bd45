"""Optional dependencies, checked without importing them.

``import spacy_privfilter`` must never import torch or mlx; only backend modules do.
"""
from __future__ import annotations

import importlib.util
import platform
import sys

from .errors import BackendUnavailableError

# Install lines that work wherever the user is (a clone, a wheel, a git URL): the runtime packages themselves,
# which every index serves. The plain torch wheel on Linux is a multi-GB CUDA build; the CPU index is ~200 MB.
TORCH_CPU = "pip install torch --index-url https://download.pytorch.org/whl/cpu"
INSTALL_HINTS = {
    "torch": f"pip install torch  (CPU only, much smaller: {TORCH_CPU})",
    "mlx": 'pip install mlx  (on Linux: pip install "mlx[cpu]")',
    "faker": "pip install faker",
    "gguf": "pip install gguf",
    "tqdm": "pip install tqdm",
    "phonenumbers": "pip install phonenumbers",
}


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def has_torch() -> bool:
    return _importable("torch")


def has_mlx() -> bool:
    return _importable("mlx") and _importable("mlx.core")


def is_apple_silicon() -> bool:
    return sys.platform == "darwin" and platform.machine() == "arm64"


def require(name: str, purpose: str) -> None:
    """Raise BackendUnavailableError naming the exact pip install when ``name`` is missing."""
    if not _importable(name):
        hint = INSTALL_HINTS.get(name, f"pip install {name}")
        raise BackendUnavailableError(f"{purpose} needs the '{name}' package, which is not installed. Fix: {hint}")
