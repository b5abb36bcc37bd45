"""CharSpans -> spaCy spans (token alignment) and the merge of new spans into ``doc.ents``.

Pure functions over a ``Doc``; the component wires them. Nothing here logs or warns with text.
"""
from __future__ import annotations

import bisect
import warnings
from typing import Iterable, Sequence

import numpy as np
from spacy.tokens import Doc, Span
from spacy.util import filter_spans

from ..spans import CharSpan
from .settings import ENTS_POLICIES, AlignmentMode, EntsPolicy


class AlignmentWarning(UserWarning):
    """Some detected spans could not be mapped onto spaCy token boundaries (counts only, never text)."""


def align_spans(doc: Doc, char_spans: Sequence[CharSpan], labels: Sequence[str], *,
                alignment_mode: AlignmentMode) -> tuple[list[Span], list[float], list[str]]:
    """Map character spans onto ``doc``'s tokens.

    Args:
        doc: the document the offsets index (``doc.text``).
        char_spans: detected spans (code-point offsets into ``doc.text``).
        labels: the output label of each span (already renamed by ``label_map``), parallel to ``char_spans``.
        alignment_mode: ``"strict"`` (keep only spans on token boundaries), ``"contract"`` (tokens fully
            inside) or ``"expand"`` (tokens touched), as in ``Doc.char_span``.
    Returns:
        (spans, scores, unaligned_labels): the aligned spans sorted by position (same-label spans that overlap
        once aligned are merged) with their scores, and the output label of every span that could not be
        aligned (empty after alignment, or off token boundaries in strict mode).
    """
    spans: list[Span] = []
    scores: list[float] = []
    unaligned: list[str] = []
    for char_span, label in zip(char_spans, labels):
        span = None
        if char_span.end > char_span.start:
            span = doc.char_span(char_span.start, char_span.end, label=label, alignment_mode=alignment_mode)
        if span is None or len(span) == 0:
            unaligned.append(label)
        else:
            spans.append(span)
            scores.append(float(char_span.score))
    spans, scores = _merge_same_label(doc, spans, scores)
    return spans, scores, unaligned


def uncovered_spans(spans: Sequence[Span], char_spans: Sequence[CharSpan], labels: Sequence[str]) -> list[list]:
    """``[start, end, label, score]`` of each character span that no aligned span covers whole (plain values,
    so they survive ``DocBin``). ``spans`` are sorted by position, as ``align_spans`` returns them."""
    starts = [span.start_char for span in spans]
    reach = list(np.maximum.accumulate([span.end_char for span in spans])) if spans else []
    out = []
    for char_span, label in zip(char_spans, labels):
        i = bisect.bisect_right(starts, char_span.start) - 1  # spans starting at or before it
        if char_span.end > char_span.start and (i < 0 or reach[i] < char_span.end):
            out.append([char_span.start, char_span.end, label, float(char_span.score)])
    return out


def _merge_same_label(doc: Doc, spans: list[Span], scores: list[float]) -> tuple[list[Span], list[float]]:
    """Merge spans of one label whose token ranges overlap into their union (score: the higher one).

    Model tokens are finer than spaCy tokens: two detected pieces of one value (``jane.doe`` + ``@x.org``)
    snap onto the same spaCy token under ``expand``; the group should hold that entity once, not twice.
    """
    if len(spans) < 2:
        return spans, scores
    order = sorted(range(len(spans)), key=lambda i: (spans[i].start, spans[i].end))
    merged: list[list] = []  # [start, end, label, score]
    open_by_label: dict[str, list] = {}
    for i in order:
        span, score = spans[i], scores[i]
        last = open_by_label.get(span.label_)
        if last is not None and span.start < last[1]:
            last[1] = max(last[1], span.end)
            last[3] = max(last[3], score)
            continue
        entry = [span.start, span.end, span.label_, score]
        merged.append(entry)
        open_by_label[span.label_] = entry
    if len(merged) == len(spans):
        return [spans[i] for i in order], [scores[i] for i in order]
    return ([Span(doc, start, end, label=label) for start, end, label, _ in merged],
            [score for *_, score in merged])


def warn_unaligned(unaligned_labels: Sequence[str], *, alignment_mode: AlignmentMode, spans_key: str) -> None:
    """One warning for one doc: how many spans were left out, per label (labels and counts only)."""
    counts: dict[str, int] = {}
    for label in unaligned_labels:
        counts[label] = counts.get(label, 0) + 1
    per_label = ", ".join(f"{label}: {n}" for label, n in sorted(counts.items()))
    warnings.warn(
        f"privacy_filter: {len(unaligned_labels)} detected span(s) ({per_label}) do not fall on spaCy token "
        f"boundaries under alignment_mode='{alignment_mode}' and were left out of doc.spans['{spans_key}'] "
        f"(counted in its attrs['unaligned']). Use alignment_mode='expand' to keep them.",
        AlignmentWarning, stacklevel=3)


def merge_ents(doc: Doc, new_spans: Iterable[Span], *, policy: EntsPolicy) -> None:
    """Write non-overlapping spans into ``doc.ents`` without corrupting entities already there.

    Overlaps among the new spans are resolved like ``spacy.util.filter_spans`` (longer first, then earlier).
    ``prioritize_new`` drops existing entities that overlap a new span; ``prioritize_existing`` drops new
    spans that overlap an existing entity; ``replace`` discards the existing entities. The final list is
    assigned as a whole, so the IOB tags are rebuilt consistently.
    """
    if policy not in ENTS_POLICIES:
        raise ValueError(f"ents_policy must be one of {', '.join(ENTS_POLICIES)}; got {policy!r}")
    new = filter_spans(list(new_spans))
    if policy == "replace":
        doc.ents = new
        return
    existing = list(doc.ents)
    if not existing:
        doc.ents = new
        return
    winners, others = (new, existing) if policy == "prioritize_new" else (existing, new)
    taken = np.zeros(len(doc), dtype=bool)
    for span in winners:
        taken[span.start:span.end] = True
    final = list(winners)
    for span in others:
        if not taken[span.start:span.end].any():
            final.append(span)
            taken[span.start:span.end] = True
    doc.ents = sorted(final, key=lambda span: (span.start, span.end))
