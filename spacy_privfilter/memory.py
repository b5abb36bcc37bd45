"""Hand freed heap memory back to the OS between batches (Linux with glibc; a no-op elsewhere).

A forward pass allocates activations of many sizes. glibc's malloc keeps what is freed: its mmap threshold
rises to the largest freed block (up to 32 MiB), so later activations come from the heap and its per-thread
arenas, and the holes between live blocks stay resident. Over a long ``nlp.pipe`` of documents of mixed
lengths resident memory kept growing well past the model's size; ``malloc_trim(0)`` returns those free
pages (see benchmarks/memory_trim.py for the measurement). Trimming walks the heap, so it runs only when
resident memory has grown by ``threshold_bytes`` since the last look.

``collector_paused()`` keeps Python's cyclic garbage collector off while one batch runs. A batch's detected
spans (tens of thousands of small tracked objects with a model that finds many) otherwise outlive two young
collections, reach the oldest generation, and soon trigger a full collection: it walks every tracked object of
the process (~430,000 in the benchmark's, with spaCy, torch and the venv's spaCy plugins loaded: ~0.23 s) and
was most of the ``nlp.pipe`` time spent outside the model at batch size 64. Freed when the batch ends, they
never get there.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
import os
import sys
from typing import Any, Callable, Iterator, Optional

DEFAULT_THRESHOLD_BYTES = 256 * 2**20
MMAP_THRESHOLD_BYTES = 32 * 2**20  # glibc's largest: blocks below it come from the heap and are reused
TRIM_THRESHOLD_BYTES = 64 * 2**20  # free memory glibc keeps at the heap's top before returning it by itself
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers (malloc.h)


def _glibc(name: str, argtypes: list, restype: Any) -> Optional[Callable[..., int]]:
    """A glibc function by name, or None where the C library lacks it (macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None
    function.argtypes, function.restype = argtypes, restype
    return function


@functools.lru_cache(maxsize=None)
def _malloc_trim() -> Optional[Callable[[int], int]]:
    """glibc's ``malloc_trim``, or None."""
    return _glibc("malloc_trim", [ctypes.c_size_t], ctypes.c_int)


@functools.lru_cache(maxsize=None)
def tune_allocator() -> bool:
    """Serve activation-sized blocks from the heap and keep it warm between forward passes (glibc only).

    With glibc's defaults a forward pass at 2,048 tokens kept faulting in fresh pages for its large
    temporaries (each freed block returned, each new one mapped again); fixing the mmap threshold at 32 MiB
    and the trim threshold at 64 MiB made it 1.1-1.2x faster (bf16 3,800-4,200 -> 4,600 tokens/s in one A/B
    run; 8-bit at 8,192 tokens 4,176 -> 4,712). Memory stays bounded: HeapTrimmer still trims between
    batches. Once per process; skipped when the user set MALLOC_MMAP_THRESHOLD_ or MALLOC_TRIM_THRESHOLD_,
    or SPACY_PRIVFILTER_TUNE_MALLOC=0. True when applied.
    """
    if os.environ.get("SPACY_PRIVFILTER_TUNE_MALLOC", "1") == "0":
        return False
    if any(name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    mallopt = _glibc("mallopt", [ctypes.c_int, ctypes.c_int], ctypes.c_int)
    return mallopt is not None and bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))


# Matmul shapes whose oneDNN kernels stay cached. A forward pass has three bfloat16 projection shapes (q; k and v;
# o); every new sequence length adds three more.
KERNEL_CACHE_CAPACITY = 8
_KERNEL_CACHE_VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")


def limit_kernel_caches(capacity: int = KERNEL_CACHE_CAPACITY) -> bool:
    """Keep the oneDNN kernels of only ``capacity`` matmul shapes (torch's defaults keep 1,024 of each kind).

    torch caches a compiled oneDNN primitive per matmul shape, twice over (oneDNN's primitive cache and ideep's
    LRU cache, which keeps primitives alive); each costs ~0.7 MB. Texts of ever new lengths add three shapes per
    forward pass: ``nlp.pipe`` over 500 documents one at a time kept ~920 MiB of them. The capacities are read
    from the environment when torch first runs a oneDNN matmul, so this must run before that (``build_model``
    calls it) and does nothing afterwards. A capacity the user set is kept; True when this set one.
    """
    missing = [name for name in _KERNEL_CACHE_VARIABLES if name not in os.environ]
    if len(missing) < len(_KERNEL_CACHE_VARIABLES):
        return False  # the user chose: both variables matter together, so set neither
    for name in missing:
        os.environ[name] = str(capacity)
    return True


def resident_bytes() -> Optional[int]:
    """This process's resident set size in bytes (Linux ``/proc/self/statm``), or None where unknown."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def trim_heap() -> bool:
    """Return freed heap pages to the OS; True when the C library released some."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


class HeapTrimmer:
    """Call ``after_batch()`` after each batch: it trims the heap once resident memory grew past the threshold."""

    def __init__(self, *, threshold_bytes: int = DEFAULT_THRESHOLD_BYTES) -> None:
        self.threshold_bytes = threshold_bytes
        self.baseline: Optional[int] = None
        self.trims = 0

    @property
    def available(self) -> bool:
        return _malloc_trim() is not None

    def after_batch(self) -> bool:
        """Trim when resident memory is ``threshold_bytes`` above the level after the last trim; True if it ran."""
        if not self.available:
            return False
        rss = resident_bytes()
        if rss is None:
            return False
        if self.baseline is None or rss < self.baseline:
            self.baseline = rss
            return False
        if rss - self.baseline < self.threshold_bytes:
            return False
        trim_heap()
        self.trims += 1
        self.baseline = resident_bytes()
        return True


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off inside the block, on again after it, also on an error.

    Nothing changes if it was off already (the caller's choice stands). Garbage made inside the block is freed by
    reference counting as usual; cycles wait for the next collection after it.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
