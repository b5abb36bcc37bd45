"""The native CPU kernels: grouped expert matmuls (bf16 or 8-bit weights) and banded attention, AVX-512 BF16.

``kernels/*.cpp`` are compiled by the system C++ compiler the first time they are needed, cached, and loaded
with ctypes: plain C entry points, so no Python extension ABI, no torch headers and no build step at install.
They run on x86-64 Linux CPUs with AVX-512 BF16 and VNNI (AMD Zen 4 and later, Intel Cooper Lake and
Sapphire Rapids and later); elsewhere, or without a compiler, ``load_kernel()`` returns None and
``unavailable_reason()`` says why, and the torch backend keeps its torch kernels.

The library is built with ``-fopenmp`` and loaded after torch, so its ``libgomp.so.1`` resolves to the copy
torch already loaded: one OpenMP runtime, one thread pool, and ``torch.set_num_threads`` applies to it.

Building and caching: ``spacy_privfilter/cbuild.py`` (``$SPACY_PRIVFILTER_KERNEL_CACHE``, else
``$XDG_CACHE_HOME/spacy_privfilter/kernels``; keyed by the sources, the flags and the compiler). Each process
checks every entry point of the loaded kernels against a numpy reference before use.
"""
from __future__ import annotations

import ctypes
import functools
import logging
import platform
from pathlib import Path
from typing import Any

import numpy as np

from ..cbuild import BuildError, build_library, disabled, load_or_reason

log = logging.getLogger(__name__)

ABI_VERSION = 9
KERNELS = Path(__file__).with_name("kernels")
SOURCES = (KERNELS / "experts_avx512.cpp", KERNELS / "attention_avx512.cpp")
HEADERS = (KERNELS / "simd.h",)
FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-fopenmp", "-mavx512f", "-mavx512bw", "-mavx512vl",
         "-mavx512bf16", "-mavx512vnni", "-mfma",
         "-ffp-contract=off")  # never fuse a multiply and an add the torch path rounds separately
CPU_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_vnni")
COLUMN_BLOCK = 16  # output columns per packed block
PANEL = 4  # column blocks per panel of the packed layout (the kernel's register tile width, NR)
PAIR_MULTIPLE = 32  # the 8-bit group size must be a multiple of this (two 16-lane halves per k-pair step)

_P, _I = ctypes.c_void_p, ctypes.c_int64


class NativeKernel:
    """The loaded library; arguments are raw addresses of contiguous arrays (the callers keep them alive)."""

    def __init__(self, library: ctypes.CDLL, path: Path) -> None:
        self.path = path
        self._linear = library.pf_grouped_linear
        self._linear.argtypes = [_P, _I, _I, _I, _P, _P, _P, _P, _P, _P, _I, _P, _P]
        self._linear.restype = None
        self._swiglu = library.pf_grouped_swiglu
        self._swiglu.argtypes = [_P, _I, _I, _I, _P, _P, _P, _P, _P, _P, _I, _P, _P, _P]
        self._swiglu.restype = None
        self._pack = library.pf_pack
        self._pack.argtypes = [_P, _I, _I, _I, _I, _I, _I, _I, _P, _P]
        self._pack.restype = None
        self._attention = library.pf_banded_attention
        self._attention.argtypes = [_P, _P, _P, _P, _P, _I, _I, _I, _I, _I, _I, _P]
        self._attention.restype = None
        self._combine = library.pf_combine
        self._combine.argtypes = [_P, _P, _P, _P, _I, _I]
        self._combine.restype = None
        self._rotary = library.pf_rotary
        self._rotary.argtypes = [_P, _I, _I, _I, _I, _P, _P, ctypes.c_float]
        self._rotary.restype = None
        self._dequantize = library.pf_dequantize
        self._dequantize.argtypes = [_P, _P, _P, _I, _I, _I, _P]
        self._dequantize.restype = None
        self._topk = library.pf_topk
        self._topk.argtypes = [_P, _I, _I, _I, _P, _P]
        self._topk.restype = _I

    def grouped_linear(self, x: int, k: int, n: int, n_groups: int, experts: int, counts: int, *, weight: int | None,
                       codes: int | None, scales: int | None, biases: int | None, group_size: int, bias: int,
                       out: int) -> None:
        """out[rows of group g] = x[rows] @ W[experts[g]]^T + bias[experts[g]] (see the C source for layouts)."""
        self._linear(x, k, n, n_groups, experts, counts, weight, codes, scales, biases, group_size, bias, out)

    def grouped_swiglu(self, x: int, k: int, n: int, n_groups: int, experts: int, counts: int, *,
                       weight: int | None, codes: int | None, scales: int | None, biases: int | None,
                       group_size: int, bias: int, params: int, out: int) -> None:
        """The gate_up product of a matrix whose halves are interleaved (``interleave_halves``), then the
        clamped SwiGLU (params: float32 [alpha, limit]): out [rows, n / 2]."""
        self._swiglu(x, k, n, n_groups, experts, counts, weight, codes, scales, biases, group_size, bias, params,
                     out)

    def pack(self, src: int, shape: tuple[int, int, int], strides: tuple[int, int, int], itemsize: int,
             order: int | None, out: int) -> None:
        """src[e, order[n], k] ([E, N, K] with element strides) -> pair-packed out (see ``pack_pairs``)."""
        self._pack(src, *shape, *strides, itemsize, order, out)

    def banded_attention(self, q: int, k: int, v: int, valid: int, sinks: int, shape: tuple[int, int, int, int, int],
                         window: int, out: int) -> None:
        """Banded GQA attention with sinks (bf16; see the C source); shape = (B, T, H, KV, d)."""
        self._attention(q, k, v, valid, sinks, *shape, window, out)

    def combine(self, out: int, y: int, tokens: int, weights: int, pairs: int, width: int) -> None:
        """out[tokens[p]] += float(y[p]) * weights[p], pairs in order (float32 out, bf16 y [pairs, width])."""
        self._combine(out, y, tokens, weights, pairs, width)

    def rotary(self, x: int, rows: int, positions: int, heads: int, d: int, cos: int, sin: int, scale: float) -> None:
        """In place: x [rows, heads, d] bf16 (``positions`` per batch row) -> apply_rotary(x, cos, sin) * scale."""
        self._rotary(x, rows, positions, heads, d, cos, sin, scale)

    def dequantize(self, codes: int, scales: int, biases: int, blocks: int, k: int, group_size: int, out: int) -> None:
        """One expert's pair-packed 8-bit codes (``blocks`` column blocks) -> pair-packed bf16 weights."""
        self._dequantize(codes, scales, biases, blocks, k, group_size, out)

    def topk(self, logits: int, rows: int, n: int, k: int, values: int, indices: int) -> int:
        """torch.topk of float32 logits [rows, n] over the last dim (k <= 16): values float32 and indices int64
        [rows, k]. Returns how many rows it left unwritten (a NaN, or ties whose order torch decides)."""
        return self._topk(logits, rows, n, k, values, indices)


# -- layouts in numpy: the reference the self-test checks the kernel's own packing against ------------------

def pack_pairs(matrix: np.ndarray) -> np.ndarray:
    """[..., N, K] -> pair-packed [..., N/16, K/2, 16, 2] in panels (bf16 as uint16, or uint8 codes): the N/16
    blocks of 16 rows are stored by panels of PANEL blocks (the last may have fewer), a panel of nr blocks as
    [K/2, nr, 16, 2], so that a register tile reads its panel as one stream. The shape is the block order's."""
    *lead, n, k = matrix.shape
    blocks = matrix.reshape(*lead, n // COLUMN_BLOCK, COLUMN_BLOCK, k // 2, 2).swapaxes(-3, -2)
    panels = [blocks[..., s:s + width, :, :, :].swapaxes(-4, -3) for s, width in _panels(blocks.shape[-4])]
    flat = np.concatenate([panel.reshape(*lead, -1) for panel in panels], axis=-1)
    return np.ascontiguousarray(flat.reshape(blocks.shape))


def unpack_pairs(packed: np.ndarray) -> np.ndarray:
    """The inverse of ``pack_pairs``: pair-packed [..., N/16, K/2, 16, 2] in panels -> [..., N, K]."""
    *lead, blocks, pairs, _, _ = packed.shape
    flat, size = packed.reshape(*lead, -1), pairs * 2 * COLUMN_BLOCK
    panels = [flat[..., s * size:(s + width) * size].reshape(*lead, pairs, width, COLUMN_BLOCK, 2).swapaxes(-4, -3)
              for s, width in _panels(blocks)]
    in_blocks = np.concatenate(panels, axis=-4)  # [..., N/16, K/2, 16, 2]
    return np.ascontiguousarray(in_blocks.swapaxes(-3, -2)).reshape(*lead, blocks * COLUMN_BLOCK, pairs * 2)


def _panels(blocks: int) -> list[tuple[int, int]]:
    """(first block, blocks) of each panel of a matrix of ``blocks`` column blocks."""
    return [(start, min(PANEL, blocks - start)) for start in range(0, blocks, PANEL)]


def pack_groups(values: np.ndarray) -> np.ndarray:
    """Per-group scales or biases [..., N, G] -> [..., N/16, G, 16]."""
    *lead, n, g = values.shape
    return np.ascontiguousarray(values.reshape(*lead, n // COLUMN_BLOCK, COLUMN_BLOCK, g).swapaxes(-2, -1))


def interleave_halves(n: int) -> np.ndarray:
    """Row order of a [.., n, k] gate_up matrix for the SwiGLU kernel: gate block b, up block b, ... (16 rows each)."""
    half = n // 2
    blocks = np.arange(half).reshape(-1, COLUMN_BLOCK)
    return np.stack([blocks, blocks + half], axis=1).reshape(-1)


def supports_shape(k: int, n: int, group_size: int | None = None) -> bool:
    """Whether the kernel takes a [n, k] matrix (8-bit with ``group_size``, else bf16)."""
    if n <= 0 or k <= 0 or n % COLUMN_BLOCK or k % 2:
        return False
    return group_size is None or (group_size % PAIR_MULTIPLE == 0 and k % group_size == 0)


# -- building and loading -----------------------------------------------------------------------------------

_reason: str | None = None


def unavailable_reason() -> str | None:
    """Why ``load_kernel()`` returned None (None when it has not failed)."""
    return _reason


@functools.lru_cache(maxsize=None)
def load_kernel() -> NativeKernel | None:
    """The native kernel, built or read from the cache and checked; None (with a reason) where it cannot run."""
    global _reason
    kernel, _reason = load_or_reason(_checked_kernel, "the kernel library")
    if kernel is None:
        log.info("native expert kernel unavailable: %s; using torch kernels", _reason)
    return kernel


def _checked_kernel() -> NativeKernel:
    kernel = _load()
    _self_test(kernel)
    return kernel


class _Unavailable(BuildError):
    """Why the kernel cannot run here (``unavailable_reason``)."""


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def _load() -> NativeKernel:
    if disabled():
        raise _Unavailable("disabled by SPACY_PRIVFILTER_NATIVE=0")
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise _Unavailable(f"it needs x86-64 Linux (this is {platform.system()} {platform.machine()})")
    missing = [flag for flag in CPU_FLAGS if flag not in _cpu_flags()]
    if missing:
        raise _Unavailable(f"this CPU lacks {', '.join(missing)}")
    try:
        target = build_library("experts_avx512", SOURCES, FLAGS, headers=HEADERS, what="the kernel")
    except BuildError as exc:
        raise _Unavailable(str(exc)) from None
    library = ctypes.CDLL(str(target))
    if library.pf_abi_version() != ABI_VERSION:
        raise _Unavailable(f"{target} has ABI {library.pf_abi_version()}, expected {ABI_VERSION}")
    return NativeKernel(library, target)


def bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16), round to nearest even (finite values)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_values(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _address(array: np.ndarray) -> int:
    return array.ctypes.data


def _self_test(kernel: NativeKernel) -> None:
    """Both weight kinds, every tile shape, against float64 numpy; refuses a kernel that disagrees."""
    rng = np.random.default_rng(0)
    experts, k, n, group = 3, 64, 96, 32  # n: 6 column blocks, tiles of 4 and 2
    counts = np.array([1, 7, 4], dtype=np.int64)
    x = bf16_bits(rng.standard_normal((int(counts.sum()), k)))
    bias = np.ascontiguousarray(bf16_values(bf16_bits(rng.standard_normal((experts, n)) * 0.1)))
    codes = rng.integers(0, 256, (experts, n, k), dtype=np.uint8)
    scales = bf16_bits(rng.uniform(0.001, 0.01, (experts, n, k // group)))
    offsets = bf16_bits(rng.standard_normal((experts, n, k // group)) * 0.1)
    dense = bf16_bits(np.repeat(bf16_values(scales), group, -1) * codes + np.repeat(bf16_values(offsets), group, -1))
    order = np.arange(experts, dtype=np.int64)
    packed = {"bf16": pack_pairs(dense), "codes": pack_pairs(codes), "scales": pack_groups(scales),
              "biases": pack_groups(offsets), "raw_codes": codes, "raw_scales": scales, "raw_biases": offsets}
    for source in (dense, codes):  # the kernel's own packing (used at load) against the numpy layout
        got = np.empty_like(pack_pairs(source))
        kernel.pack(_address(source), source.shape, tuple(d // source.itemsize for d in source.strides),
                    source.itemsize, None, _address(got))
        if not np.array_equal(got, pack_pairs(source)) or not np.array_equal(unpack_pairs(got), source):
            raise _Unavailable("the built kernel failed its self-test (packing)")
    unpacked = np.empty_like(packed["bf16"][1])
    kernel.dequantize(_address(packed["codes"][1]), _address(packed["scales"][1]), _address(packed["biases"][1]),
                      n // COLUMN_BLOCK, k, group, _address(unpacked))
    if not np.array_equal(unpacked, packed["bf16"][1]):
        raise _Unavailable("the built kernel failed its self-test (dequantized weights differ)")
    rows = np.repeat(order, counts)
    want = np.einsum("pk,pnk->pn", bf16_values(x).astype(np.float64), bf16_values(dense)[rows].astype(np.float64))
    want += bias[rows]
    for kind in ("bf16", "codes"):
        out = np.zeros((len(rows), n), dtype=np.uint16)
        quantized = kind == "codes"
        kernel.grouped_linear(_address(x), k, n, experts, _address(order), _address(counts),
                              weight=None if quantized else _address(packed["bf16"]),
                              codes=_address(packed["codes"]) if quantized else None,
                              scales=_address(packed["scales"]), biases=_address(packed["biases"]), group_size=group,
                              bias=_address(bias), out=_address(out))
        error = np.abs(bf16_values(out) - want).max()
        if not np.isfinite(error) or error > 1e-2 * np.abs(want).max():
            raise _Unavailable(f"the built kernel failed its self-test ({kind} weights, error {error:.3g})")
    _self_test_swiglu(kernel, x, order, counts, rows, want, packed, dense, bias, group)
    _self_test_passes(kernel)


def _self_test_swiglu(kernel: NativeKernel, x, order, counts, rows, products, packed, dense, bias, group) -> None:
    alpha, limit = 1.702, 1.5
    gate = np.minimum(bf16_values(bf16_bits(products[:, :products.shape[1] // 2])), limit)
    up = np.clip(bf16_values(bf16_bits(products[:, products.shape[1] // 2:])), -limit, limit) + 1
    want = gate / (1 + np.exp(-alpha * gate)) * up
    perm = interleave_halves(dense.shape[1])
    params = np.array([alpha, limit], dtype=np.float32)
    mixed_bias = np.ascontiguousarray(bias[:, perm])
    for quantized in (False, True):
        out = np.zeros((len(rows), dense.shape[1] // 2), dtype=np.uint16)
        weight = pack_pairs(dense[:, perm]) if not quantized else None
        codes = pack_pairs(packed["raw_codes"][:, perm]) if quantized else None
        scales, biases = pack_groups(packed["raw_scales"][:, perm]), pack_groups(packed["raw_biases"][:, perm])
        kernel.grouped_swiglu(_address(x), x.shape[1], dense.shape[1], len(order), _address(order), _address(counts),
                              weight=None if quantized else _address(weight),
                              codes=_address(codes) if quantized else None, scales=_address(scales),
                              biases=_address(biases), group_size=group, bias=_address(mixed_bias),
                              params=_address(params), out=_address(out))
        error = np.abs(bf16_values(out) - want).max()
        if not np.isfinite(error) or error > 2e-2 * max(1.0, np.abs(want).max()):
            raise _Unavailable(f"the built kernel failed its self-test (SwiGLU, error {error:.3g})")


def _self_test_passes(kernel: NativeKernel) -> None:
    """pf_rotary and pf_combine against numpy doing the same float32 operations and bf16 roundings: bitwise."""
    rng = np.random.default_rng(1)
    rows, heads, d, positions, scale = 6, 2, 32, 4, np.float32(64 ** -0.25)
    x, cos, sin = (bf16_bits(rng.standard_normal(shape) * 3) for shape in ((rows, heads, d), (positions, d // 2),
                                                                            (positions, d // 2)))
    r = lambda v: bf16_values(bf16_bits(v))  # noqa: E731 - float32 -> nearest bf16 -> float32
    values = bf16_values(x)
    even, odd = values[..., 0::2], values[..., 1::2]
    c, s = (bf16_values(t)[np.arange(rows) % positions][:, None, :] for t in (cos, sin))
    want = np.empty_like(values)
    want[..., 0::2] = r(r(r(even * c) - r(odd * s)) * scale)
    want[..., 1::2] = r(r(r(odd * c) + r(even * s)) * scale)
    kernel.rotary(_address(x), rows, positions, heads, d, _address(cos), _address(sin), float(scale))
    if not np.array_equal(bf16_values(x), want):
        raise _Unavailable("the built kernel failed its self-test (rotary)")
    tokens = np.array([2, 0, 2, 1, 2], dtype=np.int64)  # repeated: the order of additions matters
    y, weights = bf16_bits(rng.standard_normal((5, 16))), rng.random(5).astype(np.float32)
    out = rng.standard_normal((3, 16)).astype(np.float32)
    want = out.copy()
    for p, token in enumerate(tokens):
        want[token] += bf16_values(y[p]) * weights[p]
    kernel.combine(_address(out), _address(y), _address(tokens), _address(weights), len(tokens), 16)
    if not np.array_equal(out, want):
        raise _Unavailable("the built kernel failed its self-test (combine)")
    logits = rng.standard_normal((9, 20)).astype(np.float32)
    logits[7, 3], logits[8, 5] = logits[7].max(), np.nan  # a tie at the top and a NaN: left to the caller
    values, indices = np.zeros((9, 4), dtype=np.float32), np.zeros((9, 4), dtype=np.int64)
    left = kernel.topk(_address(logits), 9, 20, 4, _address(values), _address(indices))
    want = np.argsort(-logits[:7], axis=1, kind="stable")[:, :4]
    if left != 2 or not np.array_equal(indices[:7], want) or not np.array_equal(values[:7], logits[:7][
            np.arange(7)[:, None], want]):
        raise _Unavailable("the built kernel failed its self-test (top-k)")

def describe() -> dict[str, Any]:
    """For diagnostics: whether the kernel loads, from where, or why not."""
    kernel = load_kernel()
    return {"available": kernel is not None, "path": str(kernel.path) if kernel else None,
            "reason": unavailable_reason()}
