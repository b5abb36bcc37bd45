"""Reading and writing a PII span group with its parallel ``attrs["scores"]`` and ``attrs["sources"]``.

Other components may add spans to the group without extending those lists: spaCy's ``span_ruler`` with the
same ``spans_key`` appends its matches to the group (``SpanGroup.extend``) and leaves ``attrs`` as they were,
so the group then holds more spans than scores. The rule here: when a list is shorter than the group, its
entries belong to the first spans (appending is the only way spaCy's own components grow a group) and the
spans after them get score 1.0 (a rule match) and source ``"external"``; when a list is longer than the group
(spans were removed), no entry can be matched to a span and all get those defaults.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

import numpy as np
from spacy.tokens import Doc, Span, SpanGroup

from ..recognizers import EXTERNAL_SOURCE, Found
from ..recognizers.engine import found_span


def parallel(values: Optional[Sequence[Any]], n: int, fill: Any) -> List[Any]:
    """``values`` made parallel to a group of ``n`` spans (see the module docstring for the rule)."""
    values = [] if values is None else list(values)
    if len(values) > n:
        return [fill] * n
    return values + [fill] * (n - len(values))


def span_scores(group: SpanGroup, fill: Any = 1.0) -> List[Any]:
    """The score of each span of ``group`` (``fill`` for spans without one)."""
    return [s if s is None else float(s) for s in parallel(group.attrs.get("scores"), len(group), fill)]


def span_sources(group: SpanGroup) -> List[str]:
    return [str(s) for s in parallel(group.attrs.get("sources"), len(group), EXTERNAL_SOURCE)]


def read_found(doc: Doc, spans_key: str) -> List[Found]:
    """The group's spans as ``Found`` (character offsets, score, source); empty when there is no group."""
    if spans_key not in doc.spans:
        return []
    group = doc.spans[spans_key]
    return [found_span(span.label_, span.start_char, span.end_char, score, source)
            for span, score, source in zip(group, span_scores(group), span_sources(group))]


def write_group(doc: Doc, spans_key: str, spans: Sequence[Span], scores: Sequence[float], sources: Sequence[str],
                **counts: int) -> SpanGroup:
    """Replace the group with ``spans`` and parallel scores/sources; other attrs of the old group are kept."""
    attrs = dict(doc.spans[spans_key].attrs) if spans_key in doc.spans else {}
    group = SpanGroup(doc, name=spans_key, spans=list(spans))
    group.attrs.update(attrs)
    group.attrs["scores"] = np.asarray(scores, dtype=np.float32)
    group.attrs["sources"] = list(sources)
    group.attrs.update(counts)
    doc.spans[spans_key] = group
    return group
