"""The small protocol every runtime implements.

A backend has one job: token ids in, float32 logits out. Everything downstream (Viterbi,
spans, spaCy) is framework-free and is tested with a fake backend that returns fixed logits.
"""
from __future__ import annotations

from typing import Literal, Protocol, get_args, runtime_checkable

import numpy as np

from ..config import ModelConfig

Backend = Literal["auto", "torch", "mlx"]
"""Which runtime runs the model; "auto" picks by availability (see ``select_backend``)."""
DType = Literal["auto", "float32", "bfloat16", "float16"]
"""Weight dtype at run time; "auto" follows the checkpoint."""

BACKENDS: tuple[str, ...] = get_args(Backend)
DTYPES: tuple[str, ...] = get_args(DType)


@runtime_checkable
class ModelBackend(Protocol):
    """A loaded model.

    Attributes:
        config: the model's ModelConfig (``config.id2label`` gives the label names).
        name: short runtime name, e.g. ``"torch"``, ``"mlx"``, ``"fake"``.
    """

    config: ModelConfig
    name: str

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Run the model.

        Args:
            input_ids: int64 array of shape (batch, seq), right-padded.
            attention_mask: bool (or 0/1 int) array of shape (batch, seq); False marks padding.
        Returns:
            float32 array of shape (batch, seq, num_labels). Rows at padded positions are unspecified.
        """
        ...
