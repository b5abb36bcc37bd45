"""MLX affine-quantized weights (uint32-packed codes, per-group scales and biases) on PyTorch.

Codes stay 8-bit in memory (uint8 views of the packed words, no copy) and are dequantized where they are
used: embedding rows after the lookup, expert matrices one expert at a time inside the MoE loop. The small
attention, router and classifier matrices are dequantized once at load.

On CPUs with AVX-512 BF16 the kept experts are repacked at load and run by the native kernel instead
(torch_native.py, ``expert_kernel="auto"``), which multiplies straight from the codes; the classes here are
the portable path (``expert_kernel="torch"``, GPUs, other CPUs). There, keeping the experts 8-bit (default
``quantized_experts="keep"``) trades speed for memory, measured on the full-size random artifact, 2 threads:
resident memory after 512-token texts 1,604 MiB (1.68 GB) vs 2,839 MiB when dequantized at load; speed ~890
vs ~1,720 tokens/s at 512 tokens and ~2,400 vs ~3,250 at 4,096 (kept ones pay a per-expert dequantization
on every call).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..checkpoint.types import QuantizedWeight
from ..config import SUPPORTED_BITS
from ..errors import CheckpointError
from .torch_model import Experts


def _as_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    array = np.asarray(value)
    if array.dtype == np.uint32:
        array = array.view(np.int32)  # same bits; torch's uint32 support is thin
    return torch.from_numpy(np.ascontiguousarray(array))


def unpack_codes(packed: Any, bits: int) -> torch.Tensor:
    """uint32 words [..., n_words] -> uint8 codes [..., n_words * 32 // bits] (element j in bits [j*b, j*b+b))."""
    if bits not in SUPPORTED_BITS:
        raise CheckpointError(f"{bits}-bit MLX weights are not supported; supported bits: {SUPPORTED_BITS}")
    words = _as_tensor(packed).contiguous()
    if words.element_size() != 4:
        raise CheckpointError(f"quantized weight codes must be 32-bit words; got dtype {words.dtype}")
    as_bytes = words.view(torch.uint8)  # little-endian: byte i of a word holds bits [8i, 8i+8)
    if not np.little_endian:
        as_bytes = as_bytes.view(*words.shape, 4).flip(-1).reshape(*words.shape[:-1], -1)
    if bits == 8:
        return as_bytes
    per_byte = 8 // bits
    shifts = torch.arange(per_byte, dtype=torch.uint8) * bits
    codes = (as_bytes.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)
    return codes.reshape(*as_bytes.shape[:-1], -1)


def dequantize_codes(codes: torch.Tensor, scales: torch.Tensor, biases: torch.Tensor, *, group_size: int,
                     dtype: torch.dtype) -> torch.Tensor:
    """uint8 codes [..., cols] with scales/biases [..., cols // group_size] -> ``scale * q + bias`` in dtype."""
    shape = codes.shape
    # float32 with in-place ops: measured ~6x faster on CPU than a broadcasting addcmul in bfloat16
    # (uint8 -> float32 conversion is also cheaper than uint8 -> bfloat16), and exact before the final cast.
    grouped = codes.reshape(*shape[:-1], shape[-1] // group_size, group_size).to(torch.float32)
    grouped.mul_(scales.float().unsqueeze(-1)).add_(biases.float().unsqueeze(-1))
    return grouped.reshape(shape).to(dtype)


def dequantize(weight: QuantizedWeight, *, dtype: torch.dtype) -> torch.Tensor:
    """Dense tensor [..., rows, cols] of a QuantizedWeight, in ``dtype``."""
    codes = unpack_codes(weight.weight, weight.bits)
    return dequantize_codes(codes, _as_tensor(weight.scales), _as_tensor(weight.biases),
                            group_size=weight.group_size, dtype=dtype)


class QuantizedTensor(nn.Module):
    """uint8 codes plus per-group scales and biases, kept on ``device``; dequantized on demand."""

    def __init__(self, weight: QuantizedWeight, *, dtype: torch.dtype, device: torch.device,
                 copy: bool = False, keep_codes: bool = True) -> None:
        super().__init__()
        self.group_size = weight.group_size
        # Without ``copy`` 8-bit codes stay views of the loaded (often memory-mapped) file: no second copy.
        own = (lambda t: t.clone()) if copy else (lambda t: t)
        # keep_codes=False: the codes are read elsewhere (QuantizedEmbedding reads rows from the file); only
        # their shape is kept (not unpacked: 4-bit codes would be a full-size copy), so that nothing here holds
        # the (mapped) file.
        codes = unpack_codes(weight.weight, weight.bits) if keep_codes else None
        words = _as_tensor(weight.weight).shape
        self._shape = codes.shape if codes is not None else torch.Size([*words[:-1], words[-1] * 32 // weight.bits])
        self.register_buffer("codes", own(codes.to(device)) if codes is not None else None)
        self.register_buffer("scales", own(_as_tensor(weight.scales).to(device=device, dtype=dtype)))
        self.register_buffer("biases", own(_as_tensor(weight.biases).to(device=device, dtype=dtype)))
        # Where the codes lie on disk, while they are still views of the (mapped) file: lets a repacking
        # read them without mapping them in (torch_native.py).
        self.source = weight.source if not copy and device.type == "cpu" and weight.bits == 8 else None
        if self._shape[-1] != self.scales.shape[-1] * self.group_size:
            raise CheckpointError(f"quantized weight has {self._shape[-1]} columns but "
                                  f"{self.scales.shape[-1]} groups of {self.group_size}")

    @property
    def shape(self) -> torch.Size:
        return self._shape

    def rows(self, index: Any, dtype: torch.dtype) -> torch.Tensor:
        """Dequantized ``self[index]`` (index over the leading axis)."""
        if self.codes is None:
            raise ValueError("this table keeps no codes (its rows are read from the file)")
        return dequantize_codes(self.codes[index], self.scales[index], self.biases[index],
                                group_size=self.group_size, dtype=dtype)


class QuantizedEmbedding(nn.Module):
    """Embedding table kept quantized; only the looked-up rows are dequantized.

    When the codes come from a file and live on the CPU (``weight.source``, not copied), rows are read from
    the file for each call instead of through the memory map: a mapped page brings its neighbours with it,
    so after a few thousand distinct tokens the whole 122 MiB table of the full-size 8-bit model was
    resident; read, it costs only the rows in use (one positioned read per distinct token of a batch).
    Then only the per-group scales and biases are kept, copied (7.6 MiB at full size): views of the mapped file
    kept the whole map alive, and with it every page that loading touched (92 MiB of the full-size 8-bit model).
    """

    def __init__(self, weight: QuantizedWeight, *, dtype: torch.dtype, device: torch.device,
                 copy: bool = False) -> None:
        super().__init__()
        self.source = weight.source if (weight.source is not None and not copy and device.type == "cpu") else None
        from_file = self.source is not None
        self.weight = QuantizedTensor(weight, dtype=dtype, device=device, copy=copy or from_file,
                                      keep_codes=not from_file)
        self.dtype, self.bits = dtype, weight.bits

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.source is None:
            return self.weight.rows(input_ids, self.dtype)
        table = self.weight
        vocab = table.shape[0]
        unique, inverse = torch.unique(input_ids, return_inverse=True)
        if not unique.numel():
            return torch.empty(*input_ids.shape, table.shape[-1], dtype=self.dtype)
        if not (0 <= int(unique[0]) and int(unique[-1]) < vocab):
            raise IndexError(f"token ids must be in [0, {vocab}); got {int(unique[0])}..{int(unique[-1])}")
        row_bytes = table.shape[-1] * self.bits // 8
        raw = torch.from_numpy(self.source.read_rows(unique.tolist(), row_bytes))
        codes = unpack_codes(raw.view(torch.int32), self.bits)
        rows = dequantize_codes(codes, table.scales[unique], table.biases[unique], group_size=table.group_size,
                                dtype=self.dtype)
        return torch.index_select(rows, 0, inverse.reshape(-1)).view(*inverse.shape, rows.shape[-1])


class QuantizedExperts(Experts):
    """Experts whose two weight matrices are MLX-quantized in the transposed layout [E, out, in]."""

    @classmethod
    def from_experts(cls, dense: Experts, gate_up: Any, down: Any, *, dtype: torch.dtype,
                     device: torch.device) -> "QuantizedExperts":
        new = cls.like(dense)
        # Shapes were checked by build_model (checkpoint.check.check_tensors); only the pairing is left.
        for name, value in (("gate_up_proj", gate_up), ("down_proj", down)):
            if not isinstance(value, QuantizedWeight):
                raise CheckpointError(f"experts.{name} is dense while its sibling is quantized; "
                                      "an MLX 8-bit artifact quantizes both")
            setattr(new, name, QuantizedTensor(value, dtype=dtype, device=device))
        return new

    def expert_weight(self, name: str, expert: int, dtype: torch.dtype) -> torch.Tensor:
        # [out, in] -> [in, out] view; addmm handles the transposed stride without a copy.
        return getattr(self, name).rows(expert, dtype).t()
