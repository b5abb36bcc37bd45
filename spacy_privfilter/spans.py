"""Tag paths -> token spans -> character spans (``CharSpan``).

CONTRACT (owned by the foundation work, issue #2):
    CharSpan(label, start, end, score): frozen, ordered by (start, end); start/end are code-point offsets
    into the original Python string (what Doc.text indexes), end exclusive.
"""
from __future__ import annotations

from typing import NamedTuple


class CharSpan(NamedTuple):
    """A detected span: PII class ``label`` covering ``text[start:end]``; ``score`` in [0, 1]."""

    label: str
    start: int
    end: int
    score: float
