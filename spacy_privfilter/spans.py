"""Tag paths -> token spans -> character spans (``CharSpan``), kept or dropped by one ``SpanFilter``.

``CharSpan(label, start, end, score)`` is frozen and ordered by (start, end); start/end are code-point
offsets into the original Python string (what ``Doc.text`` indexes), end exclusive.

A span's score is the mean probability of the Viterbi-chosen label over the span's tokens
(computed before whitespace trimming, as OpenMed does). Character spans are trimmed of
leading/trailing whitespace; empty ones are dropped. Tokens that split a multi-byte character
share it, so two neighbouring spans can touch the same character: the later one is then cut
to start where the earlier one ends (counted in the log, never silent).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Collection, Iterable, Mapping, NamedTuple

import numpy as np

from .decode import tags_to_token_spans
from .errors import ConfigError
from .labels import LabelScheme

logger = logging.getLogger(__name__)


class CharSpan(NamedTuple):
    """A detected span: PII class ``label`` covering ``text[start:end]``; ``score`` in [0, 1]."""

    label: str
    start: int
    end: int
    score: float


@dataclass(frozen=True)
class SpanFilter:
    """Which spans survive: the classes kept (None keeps all) and the score each class needs.

    Args:
        threshold: drop spans whose score is below this (0..1).
        label_thresholds: per-class thresholds (0..1) replacing ``threshold`` for those classes.
        labels: keep only these classes; None keeps every class.
    """

    threshold: float = 0.0
    label_thresholds: Mapping[str, float] = field(default_factory=dict)
    labels: frozenset[str] | None = None

    @classmethod
    def checked(cls, classes: Collection[str], *, threshold: Any = 0.0,
                label_thresholds: Mapping[str, Any] | None = None,
                labels: Iterable[str] | None = None) -> "SpanFilter":
        """A filter for a model with span ``classes``; unknown class names and bad numbers are ConfigErrors."""
        label_thresholds = dict(label_thresholds or {})
        kept = None if labels is None else frozenset(labels)
        for option, names in (("labels", kept or ()), ("label_thresholds", label_thresholds)):
            unknown = sorted(str(k) for k in names if k not in classes)
            if unknown:
                raise ConfigError(f"{option} has unknown classes: {', '.join(unknown)}. Valid classes: "
                                  f"{', '.join(classes)}")
        return cls(check_probability("threshold", threshold),
                   {str(k): check_probability(f"label_thresholds[{k!r}]", v) for k, v in label_thresholds.items()},
                   kept)

    def keeps(self, label: str, score: float) -> bool:
        return (self.labels is None or label in self.labels) \
            and score >= self.label_thresholds.get(label, self.threshold)

    def apply(self, spans: Iterable[CharSpan]) -> list[CharSpan]:
        return [span for span in spans if self.keeps(span.label, span.score)]


def is_probability(value: Any) -> bool:
    """Whether ``value`` is a real number in [0, 1] (not a bool, not nan)."""
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating)) \
        and math.isfinite(float(value)) and 0.0 <= float(value) <= 1.0


def check_probability(name: str, value: Any) -> float:
    """``value`` as a float in [0, 1], else a ConfigError naming ``name`` (and the value, never text)."""
    if not is_probability(value):
        shown = repr(value) if isinstance(value, (int, float)) else type(value).__name__
        raise ConfigError(f"{name} must be a number in [0, 1]; got {shown}")
    return float(value)


def trim_whitespace(text: str, start: int, end: int) -> tuple[int, int]:
    """Shrink ``[start, end)`` past leading/trailing ``str.isspace()`` characters (may become empty)."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def tags_to_char_spans(text: str, tags: np.ndarray, log_probs: np.ndarray, char_starts: np.ndarray,
                       char_ends: np.ndarray, scheme: LabelScheme, *,
                       span_filter: SpanFilter = SpanFilter()) -> list[CharSpan]:
    """Turn one document's label path into character spans.

    Args:
        text: the original document text (offsets index it).
        tags: int64 [T] label ids (a Viterbi path).
        log_probs: float [T, C] per-token log-probabilities the path was decoded from.
        char_starts: int64 [T] first code point of each token.
        char_ends: int64 [T] one past the last code point of each token.
        scheme: the label scheme.
        span_filter: spans it drops are dropped before the overlap cut, so they cannot shorten a kept span.
    Returns:
        CharSpans sorted by start, non-overlapping.
    """
    tags = np.asarray(tags, dtype=np.int64)
    if tags.shape[0] == 0:
        return []
    chosen = np.exp(np.asarray(log_probs, dtype=np.float64)[np.arange(tags.shape[0]), tags])
    cumulative = np.concatenate([[0.0], np.cumsum(chosen)])
    spans: list[CharSpan] = []
    cut = 0
    for label, tok_start, tok_end in tags_to_token_spans(tags, scheme):
        score = float((cumulative[tok_end] - cumulative[tok_start]) / (tok_end - tok_start))
        if not span_filter.keeps(label, score):
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
