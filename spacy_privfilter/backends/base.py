"""The small protocol every runtime implements.

A backend has one job: token ids in, float32 logits out. Everything downstream (Viterbi,
spans, spaCy) is framework-free and is tested with a fake backend that returns fixed logits.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ..config import ModelConfig


@runtime_checkable
class Backend(Protocol):
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
