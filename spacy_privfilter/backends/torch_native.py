"""The torch model's experts and banded attention run by the native kernels (native.py, kernels/*.cpp).

Experts: one call per matrix for a whole run of experts.

Replaces two costs of the torch paths on CPUs with AVX-512 BF16:
- 8-bit experts are multiplied straight from their codes, as the exact affine values scale * q + bias
  (x . w = scale * (x . q) + bias * sum(x) per group, x . q in integers), instead of dequantizing each expert
  matrix into a bf16 tensor first: the same weights as ``torch_quant.dequantize_codes`` before its rounding to
  bf16 (the factored form MLX's own quantized matmul uses), at one byte per weight read;
- a Python call, a slice and a copy per expert and matrix (~2,000 per layer stack at 512 tokens) become one
  call per matrix and run of experts;
- the clamped SwiGLU runs in the gate_up call's epilogue, on the sums still in registers: gate_up's rows are
  stored with their gate and up halves interleaved block by block, so a tile holds both halves of its columns;
- the router's ``torch.topk`` (~2.4% of a forward pass at 128 and at 2,048 tokens) becomes one native pass
  (``NativeTopK``), with the same values and indices; rows with ties are left to torch.topk.

Matmul semantics are those of the bf16 ``addmm`` path: bf16 inputs and weights, float32 sums, bias added in
float32, one rounding to bf16. Only the order of the float32 additions differs; for 8-bit weights, the weights
are not rounded to bf16, and x values more than 2^7 below the largest of their group of 64 round to 2^-15 of
it (at most one bf16 rounding of the group's largest product).
"""
from __future__ import annotations

import numpy as np
import torch

from .native import COLUMN_BLOCK, NativeKernel, interleave_halves, supports_shape, unpack_pairs
from .torch_model import Experts, apply_rotary
from .torch_quant import QuantizedExperts, QuantizedTensor

_MATRICES = ("gate_up_proj", "down_proj")


def pack_pairs(matrix: torch.Tensor, kernel: NativeKernel, order: torch.Tensor | None = None,
               out: torch.Tensor | None = None) -> torch.Tensor:
    """[E, N, K] (any strides; rows taken in ``order``) -> pair-packed [E, N/16, K/2, 16, 2] by the kernel, in
    panels (the layout of ``native.pack_pairs``)."""
    e, n, k = matrix.shape
    if out is None:
        out = torch.empty(e, n // COLUMN_BLOCK, k // 2, COLUMN_BLOCK, 2, dtype=matrix.dtype)
    kernel.pack(matrix.data_ptr(), (e, n, k), matrix.stride(), matrix.element_size(),
                None if order is None else order.data_ptr(), out.data_ptr())
    return out


# Experts read from the file per repacking step: ~13 MB of the full model's codes at a time.
_EXPERTS_PER_READ = 16


def _pack_codes(tensor: QuantizedTensor, kernel: NativeKernel, order: torch.Tensor | None) -> torch.Tensor:
    """Pair-packed codes of a QuantizedTensor; read from its file in chunks of experts when it knows where they
    lie, so the mapped file's pages are never brought in (packing through the map made them resident
    next to the packed copy: 3.1 GB peak while loading the full 8-bit model instead of ~1.8 GB)."""
    codes, source = tensor.codes, tensor.source
    if source is None or source.nbytes != codes.numel():
        return pack_pairs(codes, kernel, order)
    e, n, k = codes.shape
    out = torch.empty(e, n // COLUMN_BLOCK, k // 2, COLUMN_BLOCK, 2, dtype=torch.uint8)
    buffer = np.empty(min(_EXPERTS_PER_READ, e) * n * k, dtype=np.uint8)
    for first in range(0, e, _EXPERTS_PER_READ):
        count = min(_EXPERTS_PER_READ, e - first)
        chunk = torch.from_numpy(source.read_range(first * n * k, count * n * k, buffer).reshape(count, n, k))
        pack_pairs(chunk, kernel, order, out=out[first:first + count])
    return out


def pack_groups(values: torch.Tensor) -> torch.Tensor:
    """Per-group scales or biases [E, N, G] -> [E, N/16, G, 16], always a copy: ``contiguous()`` of a view that
    is already contiguous (one group per row) would keep a view of the mapped file."""
    e, n, g = values.shape
    return values.reshape(e, n // COLUMN_BLOCK, COLUMN_BLOCK, g).transpose(-1, -2).clone(
        memory_format=torch.contiguous_format)


def native_applies(experts: Experts, dtype: torch.dtype) -> bool:
    """Whether ``experts`` (bf16 matmuls on the CPU) have shapes and formats the native kernel takes."""
    if dtype != torch.bfloat16 or (experts.compute_dtype not in (None, torch.bfloat16)):
        return False
    for name in _MATRICES:
        weight = getattr(experts, name)
        if isinstance(experts, QuantizedExperts):
            n, k = weight.codes.shape[-2:]
            group = weight.group_size
            fits = (weight.codes.device.type == "cpu" and weight.scales.dtype == torch.bfloat16
                    and weight.codes.shape[-1] == weight.scales.shape[-1] * group and supports_shape(k, n, group))
        else:
            k, n = weight.shape[-2:]
            fits = weight.device.type == "cpu" and supports_shape(k, n)
        if not fits or (name == "gate_up_proj" and n % (2 * COLUMN_BLOCK)):  # gate_up: two halves of whole blocks
            return False
    return True


class NativeExperts(Experts):
    """Experts holding pair-packed bf16 weights or 8-bit codes, run by the native kernel."""

    @classmethod
    def from_experts(cls, experts: Experts, kernel: NativeKernel) -> "NativeExperts":
        """Repack ``experts`` (dense bf16, or QuantizedExperts with 8-bit codes); theirs are not kept."""
        new = cls.like(experts)
        new.kernel, new.compute_dtype, new.row_multiple = kernel, torch.bfloat16, 1
        new.quantized = isinstance(experts, QuantizedExperts)
        new.group_size = experts.gate_up_proj.group_size if new.quantized else 0
        new.swiglu_params = np.array([experts.alpha, experts.limit], dtype=np.float32)
        # gate_up rows (output columns) with the gate and up halves interleaved by blocks of 16, for the fused SwiGLU
        order = torch.from_numpy(interleave_halves(2 * experts.intermediate_size))
        for name in _MATRICES:
            source = getattr(experts, name)
            rows = order if name == "gate_up_proj" else slice(None)
            rows_order = order if name == "gate_up_proj" else None
            if new.quantized:
                new.register_buffer(name + "_codes", _pack_codes(source, kernel, rows_order))
                new.register_buffer(name + "_scales", pack_groups(source.scales[:, rows]))
                new.register_buffer(name + "_offsets", pack_groups(source.biases[:, rows]))
            else:
                # HF layout [E, in, out] -> [E, out, in] -> packed; one copy, the dense parameter is dropped.
                by_output = source.detach().to(torch.bfloat16).transpose(-1, -2)
                new.register_buffer(name + "_packed", pack_pairs(by_output, kernel, rows_order))
            # The bias as addmm adds it: rounded to the output dtype, then added in float32.
            bias = getattr(experts, name + "_bias").detach().to(torch.bfloat16).float()[:, rows].contiguous()
            new.register_buffer(name + "_bias32", bias)
        new.register_buffer("gate_up_order", order)
        return new

    def expert_weight(self, name: str, expert: int, dtype: torch.dtype) -> torch.Tensor:
        """Dense [in, out] weight of one expert (for inspection and tests; the forward pass never builds it)."""
        if self.quantized:
            codes = getattr(self, name + "_codes")[expert]
            packed = torch.empty(codes.shape, dtype=torch.bfloat16)
            scales, offsets = getattr(self, name + "_scales")[expert], getattr(self, name + "_offsets")[expert]
            self.kernel.dequantize(codes.data_ptr(), scales.data_ptr(), offsets.data_ptr(), codes.shape[0],
                                   codes.shape[1] * 2, self.group_size, packed.data_ptr())
        else:
            packed = getattr(self, name + "_packed")[expert]
        dense = torch.from_numpy(unpack_pairs(packed.view(torch.int16).numpy())).view(torch.bfloat16)  # [out, in]
        if name == "gate_up_proj":
            dense = dense[torch.argsort(self.gate_up_order)]
        return dense.t().to(dtype)

    def _weights(self, name: str) -> dict:
        if self.quantized:
            return dict(weight=None, codes=getattr(self, name + "_codes").data_ptr(),
                        scales=getattr(self, name + "_scales").data_ptr(),
                        biases=getattr(self, name + "_offsets").data_ptr(), group_size=self.group_size)
        return dict(weight=getattr(self, name + "_packed").data_ptr(), codes=None, scales=None, biases=None,
                    group_size=0)

    def _call(self, name: str, experts: list[int], counts: list[int], rows: torch.Tensor, width: int,
              **extra) -> torch.Tensor:
        rows = rows.to(torch.bfloat16).contiguous()
        out = torch.empty(rows.shape[0], width, dtype=torch.bfloat16)
        ids = np.asarray(experts, dtype=np.int64)
        sizes = np.asarray([counts[e] for e in experts], dtype=np.int64)
        bias = getattr(self, name + "_bias32")
        run = self.kernel.grouped_swiglu if extra else self.kernel.grouped_linear
        run(rows.data_ptr(), rows.shape[1], bias.shape[-1], len(ids), ids.ctypes.data, sizes.ctypes.data,
            bias=bias.data_ptr(), out=out.data_ptr(), **self._weights(name), **extra)
        return out

    def _combine(self, out: torch.Tensor, tokens: torch.Tensor, y: torch.Tensor, weights: torch.Tensor) -> None:
        """As Experts._combine, in one pass (bitwise the same float32 roundings and order)."""
        if y.dtype != torch.bfloat16 or out.shape[1] % COLUMN_BLOCK or not out.is_contiguous():
            return super()._combine(out, tokens, y, weights)
        y, tokens, weights = y.contiguous(), tokens.contiguous(), weights.float().contiguous()
        self.kernel.combine(out.data_ptr(), y.data_ptr(), tokens.data_ptr(), weights.data_ptr(), *y.shape)

    def _hidden(self, experts: list[int], counts: list[int], rows: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        hidden = self._call("gate_up_proj", experts, counts, rows, self.intermediate_size,
                            params=self.swiglu_params.ctypes.data)
        return hidden.to(dtype)

    def _matmuls(self, name: str, experts: list[int], counts: list[int], rows: torch.Tensor,
                 dtype: torch.dtype) -> torch.Tensor:
        out = self._call(name, experts, counts, rows, getattr(self, name + "_bias32").shape[-1])
        if name == "gate_up_proj":  # back to [gate | up] columns (the forward pass uses _hidden instead)
            out = out[:, torch.argsort(self.gate_up_order)]
        return out.to(dtype)


class NativeAttention:
    """``Attention._banded`` by the native kernel, for bf16 tensors on the CPU (set as ``Attention.native``).

    Same steps and roundings as the torch path (scores rounded to bf16, float32 softmax with the sink, bf16
    probabilities, float32 sums); it never builds the [blocks, heads, block, span] score tensors.
    """

    def __init__(self, kernel: NativeKernel, attention: torch.nn.Module) -> None:
        self.kernel, self.window = kernel, attention.window
        self.heads, self.kv_heads = attention.num_heads, attention.num_kv_heads
        self.sinks = attention.sinks.detach().float().contiguous()

    @staticmethod
    def applies(attention: torch.nn.Module) -> bool:
        return attention.head_dim % COLUMN_BLOCK == 0 and attention.head_dim <= 256

    def rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, scale: float) -> torch.Tensor:
        """``apply_rotary(x, cos, sin) * scale`` in one pass, bitwise (x: [B, T, heads, d] bf16; cos, sin bf16).
        A fresh x (a projection's output) is rotated in place."""
        batch, seq, heads, d = x.shape
        if d % (2 * COLUMN_BLOCK):  # the kernel takes 16 pairs at a time
            return apply_rotary(x, cos, sin) * scale
        if not x.is_contiguous() or torch.is_grad_enabled():
            x = x.clone(memory_format=torch.contiguous_format)
        cos, sin = cos.contiguous(), sin.contiguous()
        self.kernel.rotary(x.data_ptr(), batch * seq, seq, heads, d, cos.data_ptr(), sin.data_ptr(), scale)
        return x

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        batch, seq, heads, d = q.shape
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        valid = key_mask.to(torch.uint8).contiguous()
        out = torch.empty_like(q)
        self.kernel.banded_attention(q.data_ptr(), k.data_ptr(), v.data_ptr(), valid.data_ptr(),
                                     self.sinks.data_ptr(), (batch, seq, heads, self.kv_heads, d), self.window,
                                     out.data_ptr())
        return out


class NativeTopK:
    """``torch.topk`` for the router (``MoE.select``): the native pass where it gives torch's exact result (CPU
    float32 logits [N, E] without autograd, k <= 16, no NaN and no ties among a row's k + 1 largest), else
    torch.topk itself."""

    MAX_K = 16

    def __init__(self, kernel: NativeKernel) -> None:
        self.kernel = kernel

    def __call__(self, logits: torch.Tensor, k: int, dim: int = -1):
        if (logits.device.type != "cpu" or logits.dtype != torch.float32 or logits.dim() != 2 or dim not in (-1, 1)
                or logits.requires_grad or not 1 <= k <= min(self.MAX_K, logits.shape[1])):
            return torch.topk(logits, k, dim=dim)
        logits = logits.contiguous()
        values = torch.empty(logits.shape[0], k, dtype=torch.float32)
        indices = torch.empty(logits.shape[0], k, dtype=torch.int64)
        if self.kernel.topk(logits.data_ptr(), *logits.shape, k, values.data_ptr(), indices.data_ptr()):
            return torch.topk(logits, k, dim=dim)  # ties or NaN somewhere: torch decides their order
        return values, indices
