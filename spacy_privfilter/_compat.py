"""Optional dependencies, checked without importing them.

``import spacy_privfilter`` must never import torch or mlx; only backend modules do.
"""
from __future__ import annotations

import importlib.util
import platform
import sys

from .errors import BackendUnavailableError

INSTALL_HINTS = {
    "torch": 'pip install "spacy-privfilter[torch]"  (or: pip install torch)',
    "mlx": 'pip install "spacy-privfilter[mlx]"  (on Linux: pip install "mlx[cpu]")',
    "faker": 'pip install "spacy-privfilter[redact]"  (or: pip install faker)',
    "tqdm": 'pip install tqdm',
    "phonenumbers": 'pip install "spacy-privfilter[recognizers]"  (or: pip install phonenumbers)',
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
