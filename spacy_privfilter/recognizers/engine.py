"""``Recognizers``: shipped recognizers, custom patterns, deny and allow lists over plain text.

    >>> rec = Recognizers(builtins=["card", "email"], patterns=[{"label": "medical_record_number",
    ...                   "regex": r"MRN-\\d{7}", "id": "mrn"}], allow=[{"term": "Riverside Clinic"}])
    >>> rec.apply(text, model_spans)      # Found spans: model + patterns + deny list, allow list applied, merged

Phrase and token patterns need spaCy's matchers: the ``privacy_patterns`` component runs them and feeds the
matches to ``resolve``. Everything else runs here, without spaCy.
"""
from __future__ import annotations

from typing import Any, Iterable, List, Mapping, Optional, Sequence, Tuple

from .library import builtin_finders, check_names
from .lists import DENY_SOURCE, AllowEntry, AllowList, DenyList, DenyTerm, parse_allow, parse_deny
from .merge import merge_found
from .patterns import PRIORITY_DENY, PRIORITY_OTHER, Found, Pattern, parse_pattern

MODEL_SOURCE = "model"


def _parsed(entries: Iterable[Any], parse: Any, kind: str) -> list:
    return [e if isinstance(e, (Pattern, DenyTerm, AllowEntry)) else parse(e, f"{kind} #{i + 1}")
            for i, e in enumerate(entries)]


class Recognizers:
    """Finds, filters and merges rule-based spans; see ``merge.py`` for the merging policy.

    Args:
        builtins: names of shipped recognizers (``library.RECOGNIZERS``).
        patterns: pattern lines (dicts) or ``Pattern`` objects.
        deny: deny entries (``{"term", "label"}`` dicts or ``DenyTerm``).
        allow: allow entries (``{"term"}``/``{"regex"}`` dicts, bare strings, or ``AllowEntry``).
        labels: label per shipped recognizer name, replacing its default.
        phone_regions: regions the ``phone`` recognizer reads national numbers for.
        ignore_case: default for deny and allow entries without their own ``ignore_case``.
        allow_partial: also drop a span when an allowed term only occurs inside it.
    """

    def __init__(self, *, builtins: Sequence[str] = (), patterns: Iterable[Any] = (), deny: Iterable[Any] = (),
                 allow: Iterable[Any] = (), labels: Optional[Mapping[str, str]] = None,
                 phone_regions: Sequence[str] = ("US",), ignore_case: bool = False,
                 allow_partial: bool = False) -> None:
        self.builtins = check_names(builtins)
        self.labels = dict(labels or {})
        self.phone_regions = tuple(phone_regions)
        self.ignore_case = ignore_case
        self.allow_partial = allow_partial
        self._finders = builtin_finders(self.builtins, labels=self.labels, phone_regions=self.phone_regions)
        self.patterns: List[Pattern] = []
        self.deny = DenyList([], ignore_case=ignore_case)
        self.allow = AllowList([], ignore_case=ignore_case)
        self.add_patterns(patterns)
        self.add_deny(deny)
        self.add_allow(allow)

    # -- building ------------------------------------------------------------------------------------------
    def add_patterns(self, entries: Iterable[Any]) -> None:
        self.patterns.extend(_parsed(entries, parse_pattern, "pattern"))

    def add_deny(self, entries: Iterable[Any]) -> None:
        self.deny = DenyList(self.deny.terms + _parsed(entries, parse_deny, "deny entry"),
                             ignore_case=self.ignore_case)

    def add_allow(self, entries: Iterable[Any]) -> None:
        self.allow = AllowList(self.allow.entries + _parsed(entries, parse_allow, "allow entry"),
                               ignore_case=self.ignore_case)

    @property
    def regex_patterns(self) -> List[Pattern]:
        return [p for p in self.patterns if p.kind == "regex"]

    @property
    def matcher_patterns(self) -> List[Pattern]:
        """Phrase and token patterns: spaCy's matchers run these (see ``privacy_patterns``)."""
        return [p for p in self.patterns if p.kind != "regex"]

    # -- running -------------------------------------------------------------------------------------------
    def find(self, text: str) -> List[Found]:
        """Spans of the shipped recognizers, the regex patterns and the deny list (not yet merged)."""
        found: List[Found] = []
        for finder in (*self._finders, *self.regex_patterns, self.deny):
            found.extend(finder.find(text))
        return found

    def resolve(self, text: str, spans: Iterable[Found]) -> Tuple[List[Found], int]:
        """Drop allowed spans (deny-list spans are never dropped), then merge. Returns (spans, n_allowed)."""
        kept: List[Found] = []
        n_allowed = 0
        for span in spans:
            if span.source != DENY_SOURCE and len(self.allow) \
                    and self.allow.allows(text[span.start:span.end], partial=self.allow_partial):
                n_allowed += 1
            else:
                kept.append(span)
        return merge_found(text, kept), n_allowed

    def apply(self, text: str, model_spans: Iterable[Any] = ()) -> List[Found]:
        """Model spans (CharSpan-like or dicts; source ``model`` unless they name one) plus everything found."""
        if self.matcher_patterns:
            raise ValueError(f"{len(self.matcher_patterns)} phrase/token pattern(s) need spaCy's matchers; use "
                             f"the privacy_patterns component")
        spans = [as_found(s) for s in model_spans] + self.find(text)
        return self.resolve(text, spans)[0]


def as_found(span: Any, *, source: str = MODEL_SOURCE) -> Found:
    """A ``Found`` from a CharSpan, a ``Found`` or a ``{start, end, label[, score, source]}`` dict."""
    if isinstance(span, Found):
        return span
    if isinstance(span, Mapping):
        score = span.get("score")
        return found_span(str(span["label"]), int(span["start"]), int(span["end"]),
                          1.0 if score is None else float(score), str(span.get("source") or source))
    return found_span(str(span.label), int(span.start), int(span.end), float(getattr(span, "score", 1.0)), source)


def found_span(label: str, start: int, end: int, score: float, source: str) -> Found:
    """A ``Found`` for a span recorded earlier: a deny-list source keeps its priority on a second pass."""
    return Found(label, start, end, score, source, PRIORITY_DENY if source == DENY_SOURCE else PRIORITY_OTHER)
