"""The small protocol every runtime implements, and the option values shared by all runtimes.

A backend has one job: token ids in, float32 logits out. Everything downstream (Viterbi,
spans, spaCy) is framework-free and is tested with a fake backend that returns fixed logits.
This module imports no framework, so settings and the CLI can take their choices from here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Mapping, Protocol, get_args, runtime_checkable

import numpy as np

from ..config import ModelConfig

Backend = Literal["auto", "torch", "mlx"]
"""Which runtime runs the model; "auto" picks by availability (see ``select_backend``)."""
DType = Literal["auto", "float32", "bfloat16", "float16"]
"""Weight dtype at run time; "auto" follows the checkpoint."""
QuantizedExpertsMode = Literal["keep", "dequantize"]
"""torch: keep 8-bit expert weights 8-bit in memory, or dequantize them once at load."""
ExpertPrecision = Literal["auto", "float32", "bfloat16"]
"""torch: the dtype of the expert matmuls ("auto": the weights' dtype)."""

BACKENDS: tuple[str, ...] = get_args(Backend)
DTYPES: tuple[str, ...] = get_args(DType)
QUANTIZED_EXPERTS_MODES: tuple[str, ...] = get_args(QuantizedExpertsMode)
EXPERT_PRECISIONS: tuple[str, ...] = get_args(ExpertPrecision)


@runtime_checkable
class ModelBackend(Protocol):
    """A loaded model.

    Attributes:
        config: the model's ModelConfig (``config.id2label`` gives the label names).
        name: short runtime name, e.g. ``"torch"``, ``"mlx"``, ``"fake"``.
        model_path: the local checkpoint folder the weights came from (None when built from memory);
            files shipped beside the weights, such as ``o200k_base.tiktoken``, are found there.
        viterbi_biases: the checkpoint's calibrated transition biases, or None.
    """

    config: ModelConfig
    name: str
    model_path: Path | None
    viterbi_biases: Mapping[str, float] | None

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Run the model.

        Args:
            input_ids: int64 array of shape (batch, seq), right-padded.
            attention_mask: bool (or 0/1 int) array of shape (batch, seq); False marks padding.
        Returns:
            float32 array of shape (batch, seq, num_labels). Rows at padded positions are unspecified.
        """
        ...


__all__ = ["BACKENDS", "DTYPES", "EXPERT_PRECISIONS", "QUANTIZED_EXPERTS_MODES", "Backend", "DType",
           "ExpertPrecision", "ModelBackend", "QuantizedExpertsMode"]
