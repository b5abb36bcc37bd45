"""Scoring detected spans against gold spans: exact and token-overlap P/R/F, and leakage.

Pure functions on plain data (no spaCy, no model). A span is anything with ``start``, ``end`` and
``label`` (a ``CharSpan``, or a ``{"start", "end", "label"}`` dict as found in the JSONL data files).

- Exact match: a prediction is correct when a gold span has the same label, start and end.
- Token-overlap match: a prediction is correct when it shares at least one word token (``\\w+`` or one
  punctuation character) with a gold span of the same label; recall counts the gold spans that some
  prediction of the same label overlaps. Precision and recall therefore count different matches.
- Leakage: the share of gold PII characters (whitespace excluded) that no predicted span covers, whatever
  the predicted label, because a redactor hides every predicted span.

Data sets annotate only some classes (see ``shared/data/README.md``). With
``ignore_unannotated_labels=True`` a prediction whose label is never annotated in the record's source is
ignored by P/R/F instead of being counted as a false positive; it still counts for leakage (it would
still be redacted).
"""
from __future__ import annotations

import bisect
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

TOKEN_RE = re.compile(r"\w+|[^\w\s]")
OVERALL = "overall"


@dataclass(frozen=True)
class PRF:
    """Counts behind one precision / recall / F1 triple.

    ``pred_matched`` predictions out of ``n_pred`` are correct; ``gold_matched`` gold spans out of ``n_gold``
    are found. For exact matching the two matched counts are equal.
    """

    n_pred: int = 0
    n_gold: int = 0
    pred_matched: int = 0
    gold_matched: int = 0

    @property
    def precision(self) -> float:
        # With nothing predicted, precision is 1 only when there was nothing to find (as recall, symmetrically).
        if not self.n_pred:
            return 0.0 if self.n_gold else 1.0
        return self.pred_matched / self.n_pred

    @property
    def recall(self) -> float:
        if not self.n_gold:
            return 0.0 if self.n_pred else 1.0
        return self.gold_matched / self.n_gold

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def __add__(self, other: "PRF") -> "PRF":
        return PRF(self.n_pred + other.n_pred, self.n_gold + other.n_gold,
                   self.pred_matched + other.pred_matched, self.gold_matched + other.gold_matched)

    def as_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "recall": self.recall, "f1": self.f1, "n_pred": self.n_pred,
                "n_gold": self.n_gold, "pred_matched": self.pred_matched, "gold_matched": self.gold_matched}


@dataclass(frozen=True)
class Leakage:
    """``leaked_chars`` of ``gold_chars`` non-whitespace gold characters are not covered by any prediction."""

    gold_chars: int = 0
    leaked_chars: int = 0

    @property
    def share(self) -> float:
        return self.leaked_chars / self.gold_chars if self.gold_chars else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"share": self.share, "gold_chars": self.gold_chars, "leaked_chars": self.leaked_chars}


Triple = tuple[int, int, str]


def as_triple(span: Any) -> Triple:
    """``(start, end, label)`` from a CharSpan-like object or a dict."""
    if isinstance(span, Mapping):
        return int(span["start"]), int(span["end"]), str(span["label"])
    return int(span.start), int(span.end), str(span.label)


def exact_counts(gold: Iterable[Any], pred: Iterable[Any]) -> dict[str, PRF]:
    """Per-label exact-match counts for one document."""
    gold_set, pred_set = {as_triple(s) for s in gold}, {as_triple(s) for s in pred}
    hits = gold_set & pred_set
    out: dict[str, PRF] = defaultdict(PRF)
    for _, _, label in pred_set:
        out[label] += PRF(n_pred=1)
    for _, _, label in gold_set:
        out[label] += PRF(n_gold=1)
    for _, _, label in hits:
        out[label] += PRF(pred_matched=1, gold_matched=1)
    return dict(out)


def token_ranges(text: str) -> list[tuple[int, int]]:
    """Word tokens of ``text`` as ``(start, end)`` character ranges."""
    return [m.span() for m in TOKEN_RE.finditer(text)]


def _tokens_of(start: int, end: int, tokens: Sequence[tuple[int, int]], token_ends: Sequence[int]) -> frozenset[int]:
    # The first token that ends after ``start``, then every token that starts before ``end``.
    i = bisect.bisect_right(token_ends, start)
    found = []
    while i < len(tokens) and tokens[i][0] < end:
        found.append(i)
        i += 1
    return frozenset(found)


def overlap_counts(text: str, gold: Iterable[Any], pred: Iterable[Any]) -> dict[str, PRF]:
    """Per-label token-overlap counts for one document."""
    tokens = token_ranges(text)
    ends = [te for _, te in tokens]
    gold_t = [(label, _tokens_of(s, e, tokens, ends)) for s, e, label in {as_triple(x) for x in gold}]
    pred_t = [(label, _tokens_of(s, e, tokens, ends)) for s, e, label in {as_triple(x) for x in pred}]
    out: dict[str, PRF] = defaultdict(PRF)
    for label, toks in pred_t:
        hit = any(g_label == label and toks & g_toks for g_label, g_toks in gold_t)
        out[label] += PRF(n_pred=1, pred_matched=int(hit))
    for label, toks in gold_t:
        hit = any(p_label == label and toks & p_toks for p_label, p_toks in pred_t)
        out[label] += PRF(n_gold=1, gold_matched=int(hit))
    return dict(out)


def leakage_counts(text: str, gold: Iterable[Any], pred: Iterable[Any]) -> Leakage:
    """Non-whitespace gold characters of one document, and how many no prediction covers."""
    size = len(text)
    covered = bytearray(size)
    for start, end, _ in (as_triple(s) for s in pred):
        start = min(max(start, 0), size)
        end = min(max(end, start), size)
        covered[start:end] = b"\x01" * (end - start)
    gold_chars = leaked = 0
    seen: set[int] = set()  # gold spans should not overlap, but never count a character twice
    for start, end, _ in (as_triple(s) for s in gold):
        for i in range(max(start, 0), min(end, size)):
            if i in seen or text[i].isspace():
                continue
            seen.add(i)
            gold_chars += 1
            leaked += not covered[i]
    return Leakage(gold_chars, leaked)


def annotated_labels(records: Iterable[Mapping[str, Any]], *, source_key: str = "source") -> dict[str, frozenset[str]]:
    """For each source (``record[source_key]``, ``""`` when absent), the labels its gold spans use."""
    seen: dict[str, set[str]] = defaultdict(set)
    for record in records:
        seen[str(record.get(source_key) or "")].update(as_triple(s)[2] for s in record.get("spans") or ())
    return {source: frozenset(labels) for source, labels in seen.items()}


@dataclass
class Evaluation:
    """Accumulates scores document by document (memory does not grow with the number of documents).

    Args:
        annotated: labels annotated per source (see ``annotated_labels``); predictions with other labels are
            left out of P/R/F when given. ``None`` scores every prediction.
    """

    annotated: Mapping[str, frozenset[str]] | None = None
    exact: dict[str, PRF] = field(default_factory=lambda: defaultdict(PRF))
    overlap: dict[str, PRF] = field(default_factory=lambda: defaultdict(PRF))
    leakage: Leakage = Leakage()
    n_docs: int = 0
    n_ignored: int = 0
    by_source: dict[str, SourceCounts] = field(default_factory=dict)

    def add(self, text: str, gold: Sequence[Any], pred: Sequence[Any], *, source: str = "") -> None:
        """Score one document. ``gold``/``pred``: spans (CharSpan-like or dicts) with offsets into ``text``."""
        scored = list(pred)
        if self.annotated is not None:
            allowed = self.annotated.get(source or "", frozenset())
            scored = [s for s in pred if as_triple(s)[2] in allowed]
            self.n_ignored += len(pred) - len(scored)
        for label, counts in exact_counts(gold, scored).items():
            self.exact[label] += counts
        for label, counts in overlap_counts(text, gold, scored).items():
            self.overlap[label] += counts
        self.leakage = _add_leakage(self.leakage, leakage_counts(text, gold, pred))
        for name, counts in source_counts(text, gold, scored).items():
            self.by_source[name] = self.by_source.get(name, SourceCounts()) + counts
        self.n_docs += 1

    def labels(self) -> list[str]:
        return sorted(set(self.exact) | set(self.overlap))

    def overall(self, mode: str = "exact") -> PRF:
        table = self.exact if mode == "exact" else self.overlap
        total = PRF()
        for counts in table.values():
            total += counts
        return total

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready report: overall and per-label P/R/F for both match modes, leakage and counts."""
        return {
            "n_docs": self.n_docs,
            "n_ignored_predictions": self.n_ignored,
            "exact": {OVERALL: self.overall("exact").as_dict(),
                      "per_label": {k: self.exact[k].as_dict() for k in self.labels()}},
            "overlap": {OVERALL: self.overall("overlap").as_dict(),
                        "per_label": {k: self.overlap[k].as_dict() for k in self.labels()}},
            "leakage": self.leakage.as_dict(),
            **({"by_source": {k: v.as_dict() for k, v in sorted(self.by_source.items())}} if self.by_source else {}),
        }

    def format_table(self) -> str:
        """Fixed-width text table: one row per label, then the overall row and the leakage line."""
        rows = [(label, self.exact[label], self.overlap[label]) for label in self.labels()]
        rows.append((OVERALL, self.overall("exact"), self.overall("overlap")))
        width = max([len(r[0]) for r in rows] + [5])
        head = (f"{'label':<{width}}  {'exact P':>7} {'R':>6} {'F':>6}  {'overlap P':>9} {'R':>6} {'F':>6}"
                f"  {'gold':>6} {'pred':>6}")
        lines = [head, "-" * len(head)]
        for label, ex, ov in rows:
            if label == OVERALL:
                lines.append("-" * len(head))
            lines.append(f"{label:<{width}}  {ex.precision:7.3f} {ex.recall:6.3f} {ex.f1:6.3f}  "
                         f"{ov.precision:9.3f} {ov.recall:6.3f} {ov.f1:6.3f}  {ex.n_gold:6d} {ex.n_pred:6d}")
        lines.append(f"leakage: {self.leakage.share:.4f} ({self.leakage.leaked_chars} of "
                     f"{self.leakage.gold_chars} gold PII characters not redacted); documents: {self.n_docs}")
        if self.annotated is not None:
            lines.append(f"predictions ignored (label not annotated in their source): {self.n_ignored}")
        if self.by_source:
            width = max(len(name) for name in self.by_source)
            lines.append(f"{'source':<{width}}  {'pred':>6} {'exact':>6} {'overlap':>7}")
            lines.extend(f"{name:<{width}}  {c.n_pred:6d} {c.exact:6d} {c.overlap:7d}"
                         for name, c in sorted(self.by_source.items()))
        return "\n".join(lines)


def _add_leakage(a: Leakage, b: Leakage) -> Leakage:
    return Leakage(a.gold_chars + b.gold_chars, a.leaked_chars + b.leaked_chars)


def span_problem(text: str, span: Any) -> str | None:
    """Why ``span`` cannot be scored against ``text`` (offsets only, never text), or None when it is fine."""
    try:
        start, end, label = as_triple(span)
    except (KeyError, TypeError, ValueError, AttributeError):
        return "a span needs integer 'start' and 'end' and a string 'label'"
    if not 0 <= start < end <= len(text):
        return f"span {start}:{end} ({label}) is outside the text (length {len(text)}) or empty"
    return None


# -- per-source counts: which detector (model, pattern, deny list) produced each prediction -------------------
@dataclass(frozen=True)
class SourceCounts:
    """``n_pred`` predictions of one source; ``exact`` of them match a gold span exactly, ``overlap`` share a
    token with a gold span of the same label."""

    n_pred: int = 0
    exact: int = 0
    overlap: int = 0

    def __add__(self, other: "SourceCounts") -> "SourceCounts":
        return SourceCounts(self.n_pred + other.n_pred, self.exact + other.exact, self.overlap + other.overlap)

    def as_dict(self) -> dict[str, Any]:
        return {"n_pred": self.n_pred, "exact": self.exact, "overlap": self.overlap,
                "exact_precision": self.exact / self.n_pred if self.n_pred else 0.0}


def source_of(span: Any) -> str | None:
    """The ``source`` a prediction names (``detect`` output with site-specific detection), or None."""
    source = span.get("source") if isinstance(span, Mapping) else getattr(span, "source", None)
    return None if source is None else str(source)


def source_counts(text: str, gold: Iterable[Any], pred: Iterable[Any]) -> dict[str, SourceCounts]:
    """Per-source counts for one document; predictions without a source are left out."""
    pred = [(source_of(p), as_triple(p)) for p in pred]
    pred = [(source, triple) for source, triple in pred if source is not None]
    if not pred:
        return {}
    tokens = token_ranges(text)
    ends = [te for _, te in tokens]
    gold_triples = {as_triple(g) for g in gold}
    gold_t = [(label, _tokens_of(s, e, tokens, ends)) for s, e, label in gold_triples]
    out: dict[str, SourceCounts] = {}
    for source, (start, end, label) in pred:
        toks = _tokens_of(start, end, tokens, ends)
        hit = any(g_label == label and toks & g_toks for g_label, g_toks in gold_t)
        out[source] = out.get(source, SourceCounts()) + SourceCounts(1, int((start, end, label) in gold_triples),
                                                                      int(hit))
    return out
