"""The numpy affine quantizer is bit-exact with mlx.core.quantize/dequantize; bfloat16 rounding matches torch."""
from __future__ import annotations

import numpy as np
import pytest

from spacy_privfilter.checkpoint import affine as quant


def _weights(shape, scale, seed):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal(shape) * scale).astype(np.float32)
    w.reshape(-1, shape[-1])[0, :32] = 0.0  # a group edge case: many zeros
    w.reshape(-1, shape[-1])[1, :] = 0.25  # a constant row: zero range, scale falls back to eps
    return w


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("bits,group_size", [(8, 64), (8, 32), (8, 128), (4, 64), (2, 32)])
@pytest.mark.parametrize("scale", [0.02, 1.0, 40.0])
def test_quantize_and_dequantize_match_mlx_exactly(dtype, bits, group_size, scale):
    mx = pytest.importorskip("mlx.core")
    w = _weights((3, 24, 256), scale, seed=bits * 1000 + group_size)
    array = mx.array(w) if dtype == "float32" else mx.array(w).astype(mx.bfloat16)
    mq, ms, mb = mx.quantize(array, group_size=group_size, bits=bits)
    packed, scales, biases = quant.quantize(w, bits=bits, group_size=group_size, dtype=dtype)
    np.testing.assert_array_equal(packed, np.array(mq))
    np.testing.assert_array_equal(scales, np.array(ms.astype(mx.float32)))
    np.testing.assert_array_equal(biases, np.array(mb.astype(mx.float32)))
    ours = quant.dequantize(packed, scales, biases, bits=bits, group_size=group_size, dtype=dtype)
    theirs = np.array(mx.dequantize(mq, ms, mb, group_size=group_size, bits=bits).astype(mx.float32))
    np.testing.assert_array_equal(ours, theirs)


def test_quantization_semantics():
    w = _weights((16, 128), 1.0, seed=0)
    packed, scales, biases = quant.quantize(w, bits=8, group_size=64)
    groups = w.reshape(16, 2, 64)
    lo, hi = groups.min(-1), groups.max(-1)
    edge = np.where(np.abs(lo) > np.abs(hi), lo, hi)
    varied = hi > lo
    # The bias is the group edge with the larger magnitude, so that edge is represented exactly ...
    np.testing.assert_array_equal(biases[varied], edge[varied])
    # ... and the scale is negative when that edge is the maximum.
    assert ((scales[varied] < 0) == (edge[varied] == hi[varied])).all()
    assert (scales[varied] < 0).any() and (scales[varied] > 0).any()
    # Re-deriving the scale from the exact edge can clip the opposite edge by part of a step: error <= 1 step.
    err = np.abs(quant.dequantize(packed, scales, biases) - w).reshape(16, 2, 64).max(-1)
    assert (err <= np.abs(scales) * 1.0001).all()
    assert np.median(err / np.abs(scales)) <= 0.5001


def test_packing_is_little_endian_within_each_word():
    codes = np.array([[1, 2, 3, 4, 250, 251, 252, 253]], dtype=np.uint32)
    packed = quant.pack(codes, bits=8)
    assert packed.tolist() == [[0x04030201, 0xFDFCFBFA]]
    np.testing.assert_array_equal(quant.unpack(packed, bits=8), codes)
    nibbles = np.arange(16, dtype=np.uint32)[None] % 16
    assert quant.pack(nibbles, bits=4).tolist() == [[0x76543210, 0xFEDCBA98]]


def test_bfloat16_rounding_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    values = np.concatenate([
        rng.standard_normal(5000).astype(np.float32) * 10.0 ** rng.integers(-30, 30, 5000),
        # exact ties between two bfloat16 values (round to even both ways), extremes and specials
        np.array([1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8), 3.3895314e38, 1e-45, -0.0, np.inf, -np.inf],
                 dtype=np.float32),
    ]).astype(np.float32)
    ours = quant.to_bfloat16_bits(values)
    theirs = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(quant.from_bfloat16_bits(ours), torch.from_numpy(values).to(torch.bfloat16)
                                  .float().numpy())
    nan = quant.to_bfloat16_bits(np.array([np.nan], dtype=np.float32))
    assert np.isnan(quant.from_bfloat16_bits(nan)).all()


def test_quantize_rejects_bad_shapes_and_options():
    with pytest.raises(ValueError, match="multiple of group_size"):
        quant.quantize(np.zeros((2, 100), np.float32))
    with pytest.raises(ValueError, match="bits must be"):
        quant.quantize(np.zeros((2, 64), np.float32), bits=3)
    with pytest.raises(ValueError, match="dtype must be"):
        quant.quantize(np.zeros((2, 64), np.float32), dtype="float16")
