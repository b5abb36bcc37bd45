"""Tag paths -> token spans -> character spans (``CharSpan``).

The interface the Detector and the spaCy component rely on:
    CharSpan(label, start, end, score): frozen, ordered by (start, end); start/end are code-point offsets
    into the original Python string (what Doc.text indexes), end exclusive.

A span's score is the mean probability of the Viterbi-chosen label over the span's tokens
(computed before whitespace trimming, as OpenMed does). Character spans are trimmed of
leading/trailing whitespace; empty ones are dropped. Tokens that split a multi-byte character
share it, so two neighbouring spans can touch the same character: the later one is then cut
to start where the earlier one ends (counted in the log, never silent).
"""
from __future__ import annotations

import logging
from typing import Mapping, NamedTuple

import numpy as np

from .decode import tags_to_token_spans
from .labels import LabelScheme

logger = logging.getLogger(__name__)


class CharSpan(NamedTuple):
    """A detected span: PII class ``label`` covering ``text[start:end]``; ``score`` in [0, 1]."""

    label: str
    start: int
    end: int
    score: float


def trim_whitespace(text: str, start: int, end: int) -> tuple[int, int]:
    """Shrink ``[start, end)`` past leading/trailing ``str.isspace()`` characters (may become empty)."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def tags_to_char_spans(text: str, tags: np.ndarray, log_probs: np.ndarray, char_starts: np.ndarray,
                       char_ends: np.ndarray, scheme: LabelScheme, *, threshold: float = 0.0,
                       label_thresholds: Mapping[str, float] | None = None) -> list[CharSpan]:
    """Turn one document's label path into character spans.

    Args:
        text: the original document text (offsets index it).
        tags: int64 [T] label ids (a Viterbi path).
        log_probs: float [T, C] per-token log-probabilities the path was decoded from.
        char_starts: int64 [T] first code point of each token.
        char_ends: int64 [T] one past the last code point of each token.
        scheme: the label scheme.
        threshold: drop spans whose score is below this.
        label_thresholds: per-class thresholds that replace ``threshold`` for that class.
    Returns:
        CharSpans sorted by start, non-overlapping.
    """
    tags = np.asarray(tags, dtype=np.int64)
    if tags.shape[0] == 0:
        return []
    chosen = np.exp(np.asarray(log_probs, dtype=np.float64)[np.arange(tags.shape[0]), tags])
    cumulative = np.concatenate([[0.0], np.cumsum(chosen)])
    thresholds = label_thresholds or {}
    spans: list[CharSpan] = []
    cut = 0
    for label, tok_start, tok_end in tags_to_token_spans(tags, scheme):
        score = float((cumulative[tok_end] - cumulative[tok_start]) / (tok_end - tok_start))
        if score < thresholds.get(label, threshold):
            continue
        start, end = trim_whitespace(text, int(char_starts[tok_start]), int(char_ends[tok_end - 1]))
        if spans and start < spans[-1].end:
            cut += 1
            start, end = trim_whitespace(text, spans[-1].end, end)
        if start < end:
            spans.append(CharSpan(label, start, end, min(score, 1.0)))
    if cut:
        logger.info("%d span(s) shared a split multi-byte character with the previous span; "
                    "start moved past it", cut)
    return spans
