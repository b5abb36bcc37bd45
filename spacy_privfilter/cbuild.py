"""Small C++ libraries compiled on first use and cached: the native kernels (``backends/native.py``) and the
Viterbi decoder (``decode.py``).

Each library is built by the system C++ compiler (``$CXX``, else ``c++``, ``g++`` or ``clang++``) into the cache
folder: ``$SPACY_PRIVFILTER_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/spacy_privfilter/kernels`` (default
``~/.cache``). The file name carries a hash of the sources, the flags and the compiler's version, so an edit or a
new compiler builds anew. A library is built under a temporary name and renamed, so concurrent processes never load
half a file. ``SPACY_PRIVFILTER_NATIVE=0`` turns every such library off (the callers fall back to Python code).
Standard library only: importing this module imports nothing else.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable, Sequence, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class BuildError(Exception):
    """A library cannot be built here; the message says why (no compiler, or the compiler's last error line)."""


def disabled() -> bool:
    """Whether ``SPACY_PRIVFILTER_NATIVE=0`` turns the compiled libraries off."""
    return os.environ.get("SPACY_PRIVFILTER_NATIVE", "1") == "0"


def cache_dir() -> Path:
    if os.environ.get("SPACY_PRIVFILTER_KERNEL_CACHE"):
        return Path(os.environ["SPACY_PRIVFILTER_KERNEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "spacy_privfilter" / "kernels"


def find_compiler() -> str | None:
    wanted = os.environ.get("CXX")
    if wanted:
        return shutil.which(wanted)
    return next((found for name in ("c++", "g++", "clang++") if (found := shutil.which(name))), None)


@functools.lru_cache(maxsize=None)
def _version(compiler: str) -> str:
    return subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout


def build_library(stem: str, sources: Sequence[Path], flags: Sequence[str], *, headers: Sequence[Path] = (),
                  what: str = "the library") -> Path:
    """The cached shared library built from ``sources`` with ``flags``, building it first if needed.

    Raises:
        BuildError: no compiler, or the compiler failed (``what`` names the library in the message).
    """
    compiler = find_compiler()
    if compiler is None:
        raise BuildError("no C++ compiler found (install g++, or set CXX)")
    texts = [path.read_text() for path in (*sources, *headers)]
    key = hashlib.sha256("\0".join([*texts, *flags, _version(compiler)]).encode()).hexdigest()[:16]
    folder = cache_dir()
    target = folder / f"{stem}-{key}.so"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=target.stem + ".", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        done = subprocess.run([compiler, *flags, *map(str, sources), "-o", partial], capture_output=True, text=True,
                              timeout=300)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise BuildError(f"{Path(compiler).name} failed to build {what} ({last[:300]})")
        os.replace(partial, target)
        log.info("built %s: %s", what, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target


def load_or_reason(load: Callable[[], T], what: str) -> tuple[T | None, str | None]:
    """``(load(), None)``, or ``(None, why)`` when ``load`` cannot give a working library here: a BuildError (no
    compiler, another CPU, a failed self-test...) or an error of the compiler or the loader. Never raises those."""
    try:
        return load(), None
    except BuildError as exc:
        return None, str(exc)
    except (OSError, subprocess.SubprocessError, AttributeError) as exc:
        return None, f"{what} could not be built or loaded ({type(exc).__name__}: {exc})"
