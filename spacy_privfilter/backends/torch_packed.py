"""Expert matrices pre-packed once for oneDNN, the CPU bfloat16 fast path of the MoE.

A plain ``addmm`` on a bfloat16 CPU weight makes oneDNN reorder the whole matrix into its blocked layout on
every call; with ~16 tokens per expert (one 512-token text) that reorder costs more than the product itself.
Packing each expert's two matrices at load time removes it. Measured on the full-size expert shape
(640 -> 1280, 2 threads, weights streamed from memory): 68-72 us instead of 112-127 us at 16 rows,
40-46 us instead of 96-98 us at 1 row, 1.8 ms instead of 2.1 ms at 1,024 rows. Numbers are the same as
``addmm``'s (bfloat16 inputs, float32 accumulation, one rounding to bfloat16).

Only used where it applies: CPU, bfloat16 weights and matmuls, a torch build with oneDNN. Packed matrices
are opaque oneDNN tensors, so they replace the dense parameters instead of doubling memory.
"""
from __future__ import annotations

import functools

import torch
from .torch_model import Experts


@functools.lru_cache(maxsize=None)
def packing_available() -> bool:
    """True when this torch build can pack and run bfloat16 linear weights through oneDNN, checked for real."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        weight = torch.arange(12, dtype=torch.float32).view(3, 4).div_(7).bfloat16()
        rows = torch.ones(2, 4, dtype=torch.bfloat16)
        bias = torch.ones(3, dtype=torch.bfloat16)
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, 2)
        got = torch.ops.mkldnn._linear_pointwise(rows, packed, bias, "none", [], "")
        return bool(torch.equal(got, torch.nn.functional.linear(rows, weight, bias)))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


def _pack(weight: torch.Tensor) -> torch.Tensor:
    """[out, in] bfloat16 -> opaque oneDNN tensor (the row-count hint does not change the layout chosen)."""
    return torch.ops.mkldnn._reorder_linear_weight(weight, 16)


class PackedExperts(Experts):
    """Experts whose ``[in, out]`` matrices are held as per-expert oneDNN-packed ``[out, in]`` weights."""

    @classmethod
    def from_experts(cls, dense: Experts) -> "PackedExperts":
        """Pack ``dense`` (bfloat16 weights on the CPU); its dense matrices are not kept."""
        new = cls.like(dense)
        new.compute_dtype = torch.bfloat16
        new._packed = {}
        for name in ("gate_up_proj", "down_proj"):
            # One [E, out, in] copy per matrix (a single large allocation, handed back to the OS when freed;
            # per-expert temporaries would fragment the heap between the packed blocks).
            by_output = getattr(dense, name).to(torch.bfloat16).transpose(-1, -2).contiguous()
            new._packed[name] = [_pack(by_output[e]) for e in range(dense.num_experts)]
        return new

    def expert_weight(self, name: str, expert: int, dtype: torch.dtype) -> torch.Tensor:
        return self._packed[name][expert].to_dense().t().to(dtype)

    def _project(self, name: str, expert: int, rows: torch.Tensor, out: torch.Tensor) -> None:
        bias = getattr(self, name + "_bias")[expert]
        out.copy_(torch.ops.mkldnn._linear_pointwise(rows, self._packed[name][expert], bias, "none", [], ""))
