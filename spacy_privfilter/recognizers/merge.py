"""One merging policy for spans from the model, patterns, deny lists and other components.

Every span has a rank: ``(priority, score, length)``, highest first, where priority is 3 for a deny-list
term, 2 for a pattern whose validator accepted the match, 1 for everything else (model spans, patterns
without a validator, spans other components added). Spans are taken in rank order (ties: earlier first):

- a span overlapping an already taken span of the **same label** is united with it (union of the extents,
  the higher score, the source of the higher-ranked span);
- a span overlapping already taken spans of **other labels** loses the overlapped characters: what is left
  outside them is kept with its own label if it holds a letter or digit, else the span is dropped. So a
  validated card number beats a model span of another label on the same digits, and a lower-ranked span
  that reaches beyond the winner still hides the rest of its text.

The result is sorted by (start, end), with no two spans of different labels overlapping. Offsets only:
nothing here looks at labels' meaning or logs text.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

from ..spans import trim_whitespace
from .patterns import Found


def _rank(span: Found) -> Tuple[int, float, int, int]:
    return (span.priority, span.score, span.end - span.start, -span.start)


def _outside(text: str, span: Found, others: Sequence[Found]) -> List[Found]:
    """The pieces of ``span`` not covered by ``others``, trimmed; pieces without a letter or digit go."""
    pieces = [(span.start, span.end)]
    for other in sorted(others, key=lambda o: o.start):
        cut = []
        for start, end in pieces:
            if other.end <= start or other.start >= end:
                cut.append((start, end))
                continue
            if start < other.start:
                cut.append((start, other.start))
            if other.end < end:
                cut.append((other.end, end))
        pieces = cut
    kept = []
    for start, end in pieces:
        start, end = trim_whitespace(text, start, end)
        if any(ch.isalnum() for ch in text[start:end]):
            kept.append(span._replace(start=start, end=end))
    return kept


def merge_found(text: str, spans: Sequence[Found]) -> List[Found]:
    """Apply the policy above to ``spans`` (offsets into ``text``)."""
    taken: List[Found] = []
    for span in sorted(spans, key=_rank, reverse=True):
        if span.end <= span.start:
            continue
        rivals = [t for t in taken if t.label != span.label and t.start < span.end and span.start < t.end]
        for piece in (_outside(text, span, rivals) if rivals else [span]):
            same = [t for t in taken if t.label == piece.label and t.start < piece.end and piece.start < t.end]
            if not same:
                taken.append(piece)
                continue
            best = max(same, key=_rank)
            united = best._replace(start=min([piece.start] + [t.start for t in same]),
                                   end=max([piece.end] + [t.end for t in same]),
                                   score=max([piece.score] + [t.score for t in same]))
            taken = [t for t in taken if t not in same] + [united]
    return sorted(taken, key=lambda s: (s.start, s.end, s.label))
