"""A framework-free backend with fixed logits, for tests and for everything downstream of the model."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ..config import ModelConfig


class FakeBackend:
    """Returns logits looked up by the exact token-id sequence, or computed from ids by ``logits_fn``.

    Args:
        id2label: label names (O + B/I/E/S x classes).
        table: optional mapping ``tuple(input_ids) -> float32 [T, C]`` (oracle logits for known texts).
        logits_fn: optional ``f(ids: np.ndarray[T]) -> np.ndarray[T, C]`` used when the row is not in ``table``;
            by default every token gets a large ``O`` logit.
        model_path: a folder standing in for the checkpoint (e.g. one holding ``o200k_base.tiktoken``).
        viterbi_biases: transition biases the Detector should use by default.
    """

    name = "fake"

    def __init__(self, id2label: Sequence[str], *, table: Mapping[tuple[int, ...], np.ndarray] | None = None,
                 logits_fn: Callable[[np.ndarray], np.ndarray] | None = None, num_hidden_layers: int = 8,
                 sliding_window: int = 128, model_path: Path | None = None,
                 viterbi_biases: Mapping[str, float] | None = None) -> None:
        self.config = ModelConfig(id2label=tuple(id2label), num_hidden_layers=num_hidden_layers,
                                  sliding_window=sliding_window)
        self.model_path = model_path
        self.viterbi_biases = dict(viterbi_biases) if viterbi_biases else None
        self.table = dict(table or {})
        self.logits_fn = logits_fn
        self.calls: list[tuple[int, int]] = []  # (batch, seq) of every call, for batching tests

    def _row(self, ids: np.ndarray) -> np.ndarray:
        found = self.table.get(tuple(int(i) for i in ids))
        if found is not None:
            return np.asarray(found, dtype=np.float32)
        if self.logits_fn is not None:
            return np.asarray(self.logits_fn(ids), dtype=np.float32)
        out = np.zeros((len(ids), self.config.num_labels), dtype=np.float32)
        out[:, 0] = 10.0
        return out

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        input_ids = np.asarray(input_ids)
        mask = np.asarray(attention_mask).astype(bool)
        batch, seq = input_ids.shape
        self.calls.append((batch, seq))
        out = np.zeros((batch, seq, self.config.num_labels), dtype=np.float32)
        for b in range(batch):
            n = int(mask[b].sum())
            if n:
                out[b, :n] = self._row(input_ids[b, :n])
        return out
