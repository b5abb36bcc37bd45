"""MLX-compatible affine quantisation and bfloat16 rounding in plain numpy.

``quantize``/``dequantize`` reproduce ``mlx.core.quantize``/``mlx.core.dequantize`` (mode "affine") bit for bit,
so checkpoints can be written and read without MLX installed:

* groups of ``group_size`` consecutive values along the last axis;
* per group, ``scale = max((max - min) / (2**bits - 1), 1e-7)`` signed so that the edge with the larger magnitude
  (``min`` or ``max``) becomes ``bias`` and is represented exactly (``scale`` is re-derived as
  ``edge / rint(edge / scale)``); codes are ``clip(rint((w - bias) / scale), 0, 2**bits - 1)``, all in float32;
* codes are packed little-endian into uint32 words (element ``j`` of a word in bits ``[j*bits, (j+1)*bits)``);
* scales and biases are stored in the dtype of the input (float32 or bfloat16, rounded to nearest even).

numpy has no bfloat16, so bfloat16 values travel as their raw uint16 bit patterns ("bits") or as float32 values
that are exactly representable in bfloat16.
"""
from __future__ import annotations

from typing import Literal

import numpy as np

from ..config import SUPPORTED_BITS, SUPPORTED_GROUP_SIZES

QuantDtype = Literal["float32", "bfloat16"]
EPS = np.float32(1e-7)


# -- bfloat16 <-> float32 ------------------------------------------------------------------------------------
def to_bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """float32 values -> uint16 bfloat16 bit patterns, rounding to nearest even (NaN stays NaN)."""
    f32 = np.ascontiguousarray(values, dtype=np.float32)
    bits = f32.view(np.uint32)
    rounded = bits >> np.uint32(16)  # in-place steps: one temporary, even for a 100M-element expert tensor
    rounded &= np.uint32(1)
    rounded += np.uint32(0x7FFF)
    rounded += bits
    rounded >>= np.uint32(16)
    out = rounded.astype(np.uint16)
    nan = np.isnan(f32)
    if nan.any():
        # A plain add could carry a NaN payload into the infinity pattern; keep it a quiet NaN.
        out[nan] = ((bits[nan] >> np.uint32(16)) | np.uint32(0x40)).astype(np.uint16)
    return out


def from_bfloat16_bits(bits: np.ndarray) -> np.ndarray:
    """uint16 bfloat16 bit patterns -> float32 values (exact)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def round_to_bfloat16(values: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bfloat16, returned as float32."""
    return from_bfloat16_bits(to_bfloat16_bits(values))


def _round_to(values: np.ndarray, dtype: QuantDtype) -> np.ndarray:
    if dtype == "bfloat16":
        return round_to_bfloat16(values)
    if dtype == "float32":
        return np.asarray(values, dtype=np.float32)
    raise ValueError(f"dtype must be 'float32' or 'bfloat16'; got {dtype!r}")


# -- affine quantisation -------------------------------------------------------------------------------------
def _check(bits: int, group_size: int, cols: int) -> None:
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits must be one of {SUPPORTED_BITS} (whole codes per uint32 word); got {bits}")
    if group_size not in SUPPORTED_GROUP_SIZES:
        raise ValueError(f"group_size must be one of {SUPPORTED_GROUP_SIZES}; got {group_size}")
    if cols % group_size:
        raise ValueError(f"the last axis ({cols}) must be a multiple of group_size ({group_size})")


def quantize(weight: np.ndarray, *, bits: int = 8, group_size: int = 64,
             dtype: QuantDtype = "float32") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Affine-quantize ``weight`` [..., cols] exactly as ``mlx.core.quantize`` does.

    Args:
        weight: float array [..., cols]; with ``dtype="bfloat16"`` its values are first rounded to bfloat16
            (as an MLX bfloat16 array would hold them).
        bits: code width (2, 4 or 8).
        group_size: consecutive values sharing one scale and bias.
        dtype: the dtype MLX would see ("float32" or "bfloat16"); scales and biases are rounded to it.

    Returns:
        ``(packed, scales, biases)``: uint32 [..., cols * bits / 32] and float32 [..., cols / group_size] each
        (bfloat16-exact values when ``dtype="bfloat16"``).
    """
    w = _round_to(np.asarray(weight, dtype=np.float32), dtype)
    cols = w.shape[-1]
    _check(bits, group_size, cols)
    groups = w.reshape(*w.shape[:-1], cols // group_size, group_size)
    n_bins = np.float32(2 ** bits - 1)
    w_max = groups.max(axis=-1)
    w_min = groups.min(axis=-1)
    use_min = np.abs(w_min) > np.abs(w_max)
    scale = np.maximum((w_max - w_min) / n_bins, EPS)
    scale = np.where(use_min, scale, -scale).astype(np.float32)
    edge = np.where(use_min, w_min, w_max).astype(np.float32)
    q0 = np.rint(edge / scale)
    nonzero = q0 != 0
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(nonzero, edge / np.where(nonzero, q0, 1), scale).astype(np.float32)
    bias = np.where(nonzero, edge, np.float32(0)).astype(np.float32)
    codes = np.rint((groups - bias[..., None]) / scale[..., None])
    codes = np.clip(codes, 0, n_bins).astype(np.uint32).reshape(w.shape)
    return pack(codes, bits=bits), _round_to(scale, dtype), _round_to(bias, dtype)


def pack(codes: np.ndarray, *, bits: int) -> np.ndarray:
    """Integer codes [..., cols] -> uint32 words [..., cols * bits / 32], little-endian within each word."""
    per_word = 32 // bits
    c = np.asarray(codes, dtype=np.uint32).reshape(*codes.shape[:-1], codes.shape[-1] // per_word, per_word)
    shifts = (np.arange(per_word, dtype=np.uint32) * np.uint32(bits))
    return np.bitwise_or.reduce(c << shifts, axis=-1).astype(np.uint32)


def unpack(packed: np.ndarray, *, bits: int) -> np.ndarray:
    """uint32 words [..., n] -> integer codes uint32 [..., n * 32 / bits]."""
    per_word = 32 // bits
    p = np.asarray(packed, dtype=np.uint32)
    shifts = (np.arange(per_word, dtype=np.uint32) * np.uint32(bits))
    codes = (p[..., None] >> shifts) & np.uint32(2 ** bits - 1)
    return codes.reshape(*p.shape[:-1], p.shape[-1] * per_word)


def dequantize(packed: np.ndarray, scales: np.ndarray, biases: np.ndarray, *, bits: int = 8,
               group_size: int = 64, dtype: QuantDtype = "float32") -> np.ndarray:
    """``scale * q + bias`` per group, as ``mlx.core.dequantize`` computes it; float32 [..., cols].

    With ``dtype="bfloat16"`` the product and the sum are each rounded to bfloat16, like MLX's bfloat16 kernel.
    """
    codes = unpack(packed, bits=bits).astype(np.float32)
    cols = codes.shape[-1]
    _check(bits, group_size, cols)
    groups = codes.reshape(*codes.shape[:-1], cols // group_size, group_size)
    s = np.asarray(scales, dtype=np.float32)[..., None]
    b = np.asarray(biases, dtype=np.float32)[..., None]
    out = _round_to(_round_to(groups * s, dtype) + b, dtype)
    return out.reshape(codes.shape)
