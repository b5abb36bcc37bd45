"""Long-document windows and batch packing: token ids of many documents -> padded model batches.

Long documents are cut into windows of at most ``max_tokens``. Each window's scored *core* keeps
``margin`` tokens of context on each side (less at the document edges); with ``margin`` set to the
model's receptive field that is everything that can reach a core token through the banded attention,
so the stitched logits equal an unwindowed forward pass.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

# Documents are decoded in groups of about this many model batches of tokens: logits cost 4 * num_labels
# bytes per token (~0.9 KB for 221 labels), ~40x the tokens themselves, so memory stays bounded by a group
# (or one long document), not by how many texts a caller passes at once.
GROUP_BATCHES = 8


class Window(NamedTuple):
    """Tokens ``[start, stop)`` of document ``doc`` go to the model; ``[core_start, core_stop)`` is kept."""

    doc: int
    start: int
    stop: int
    core_start: int
    core_stop: int


def plan_windows(num_tokens: int, max_tokens: int, margin: int, doc: int = 0) -> list[Window]:
    """Cover ``num_tokens`` with windows of <= ``max_tokens`` whose cores tile the document.

    Every core token has ``margin`` tokens of context on each side inside its window, or the document edge.
    Needs ``max_tokens > 2 * margin`` when the document is longer than ``max_tokens``.
    """
    if num_tokens <= max_tokens:
        return [Window(doc, 0, num_tokens, 0, num_tokens)] if num_tokens else []
    windows = []
    core_start = 0
    while core_start < num_tokens:
        start = max(0, core_start - margin)
        stop = min(num_tokens, start + max_tokens)
        core_stop = stop if stop == num_tokens else stop - margin
        windows.append(Window(doc, start, stop, core_start, core_stop))
        core_start = core_stop
    return windows


def pack_batches(windows: list[Window], max_batch_tokens: int) -> list[list[Window]]:
    """Group windows, longest first, so that ``len(batch) * longest <= max_batch_tokens`` (padded tokens)."""
    ordered = sorted(windows, key=lambda w: (-(w.stop - w.start), w.doc, w.start))
    batches: list[list[Window]] = []
    for window in ordered:
        longest = batches[-1][0].stop - batches[-1][0].start if batches else 0
        if batches and (len(batches[-1]) + 1) * longest <= max_batch_tokens:
            batches[-1].append(window)
        else:
            batches.append([window])
    return batches


def pad_batch(batch: Sequence[Window], docs: Sequence[np.ndarray | None], pad_token_id: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """``input_ids`` int64 [B, S] (right-padded with ``pad_token_id``) and ``attention_mask`` bool [B, S]."""
    seq = max(w.stop - w.start for w in batch)
    input_ids = np.full((len(batch), seq), pad_token_id, dtype=np.int64)
    attention_mask = np.zeros((len(batch), seq), dtype=bool)
    for row, w in enumerate(batch):
        input_ids[row, : w.stop - w.start] = docs[w.doc][w.start:w.stop]
        attention_mask[row, : w.stop - w.start] = True
    return input_ids, attention_mask


def group_documents(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Consecutive index groups whose lengths sum to <= ``max_tokens`` (a longer document goes alone)."""
    groups: list[list[int]] = [[]]
    total = 0
    for i, size in enumerate(lengths):
        if groups[-1] and total + size > max_tokens:
            groups.append([])
            total = 0
        groups[-1].append(i)
        total += size
    return groups if groups[0] else []
