"""spaCy component ``privacy_patterns``: validated patterns, deny and allow lists merged into the PII group.

Place it after ``privacy_filter`` (and before ``privacy_redactor``, which then redacts the merged result):

    nlp.add_pipe("privacy_filter")
    patterns = nlp.add_pipe("privacy_patterns", config={"recognizers": ["card", "iban", "email"]})
    patterns.add_patterns([{"label": "medical_record_number", "regex": r"MRN-\\d{7}", "id": "mrn"}])
    patterns.add_allow([{"term": "Riverside Clinic"}])
    nlp.add_pipe("privacy_redactor")

It reads ``doc.spans[spans_key]`` (the model's spans, and any that span_ruler or others added), adds its own
matches, drops allowed spans, merges everything by the policy of ``recognizers/merge.py`` and writes the group
back with parallel ``attrs["scores"]`` and ``attrs["sources"]`` (``model``, ``pattern:<id>``, ``deny``,
``external``) and ``attrs["allowed"]`` (how many spans the allow list dropped). Without a group (no model in
the pipeline) it creates one. Patterns, deny and allow entries are saved with the pipeline (``to_disk``), not
in config.cfg: deny terms can themselves be personal data.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import srsly
from spacy.language import Language
from spacy.matcher import Matcher, PhraseMatcher
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import ensure_path

from ..errors import CheckpointError, ConfigError
from ..recognizers import Found, Pattern, RecognizerName, Recognizers, read_lines
from ..recognizers.lists import entry_dict
from .span_groups import read_found, write_group

SERIALIZATION_VERSION = 1
CFG_FILE = "cfg.json"
LIST_FILES = {"patterns": "patterns.jsonl", "deny": "deny.jsonl", "allow": "allow.jsonl"}

DEFAULT_CONFIG: Dict[str, Any] = {
    "spans_key": "pii",
    "recognizers": [],
    "recognizer_labels": {},
    "phone_regions": ["US"],
    "ignore_case": False,
    "allow_partial": False,
}


@Language.factory("privacy_patterns", default_config=DEFAULT_CONFIG, assigns=["doc.spans"])
def make_privacy_patterns(
    nlp: Language,
    name: str,
    spans_key: str,
    recognizers: List[RecognizerName],
    recognizer_labels: Dict[str, str],
    phone_regions: List[str],
    ignore_case: bool,
    allow_partial: bool,
) -> "PrivacyPatterns":
    """Build a ``privacy_patterns`` component.

    Args:
        spans_key: the ``doc.spans`` group to merge into (``privacy_filter``'s ``spans_key``).
        recognizers: shipped recognizers to run: card, iban, ssn, nhs, email, ipv4, ipv6, mac, url, phone.
        recognizer_labels: label per shipped recognizer replacing its default, e.g. ``{"nhs": "national_id"}``.
        phone_regions: regions whose national phone numbers the ``phone`` recognizer reads (``+`` numbers always).
        ignore_case: default for deny and allow entries without their own ``ignore_case``.
        allow_partial: also drop a detected span when an allowed term or regex only occurs inside it.
    """
    return PrivacyPatterns(nlp, name, spans_key=spans_key, recognizers=recognizers,
                           recognizer_labels=recognizer_labels, phone_regions=phone_regions,
                           ignore_case=ignore_case, allow_partial=allow_partial)


class PrivacyPatterns:
    """Run ``Recognizers`` (plus spaCy matchers for phrase and token patterns) and merge into the PII group."""

    def __init__(self, nlp: Language, name: str = "privacy_patterns", *, spans_key: str = "pii",
                 recognizers: Iterable[str] = (), recognizer_labels: Optional[Dict[str, str]] = None,
                 phone_regions: Iterable[str] = ("US",), ignore_case: bool = False,
                 allow_partial: bool = False) -> None:
        if not isinstance(spans_key, str) or not spans_key:
            raise ConfigError(f"privacy_patterns: 'spans_key' must be a non-empty string; got {spans_key!r}")
        for key, value in (("ignore_case", ignore_case), ("allow_partial", allow_partial)):
            if not isinstance(value, bool):
                raise ConfigError(f"privacy_patterns: '{key}' must be true or false; got {type(value).__name__}")
        self.name = name
        self.spans_key = spans_key
        self.vocab = nlp.vocab
        self._make_doc: Callable[[str], Doc] = nlp.make_doc
        try:
            self.engine = Recognizers(builtins=list(recognizers), labels=recognizer_labels,
                                      phone_regions=list(phone_regions), ignore_case=ignore_case,
                                      allow_partial=allow_partial)
        except ConfigError as exc:
            raise ConfigError(f"privacy_patterns: {exc}") from None
        self._matchers: Optional[Tuple[Matcher, PhraseMatcher, PhraseMatcher]] = None

    # -- rules ---------------------------------------------------------------------------------------------
    def add_patterns(self, patterns: Iterable[Any]) -> None:
        """Add pattern lines (span_ruler's format plus ``regex``, ``score``, ``validator``, ``ignore_case``)."""
        self.engine.add_patterns(patterns)
        self._matchers = None

    def add_deny(self, entries: Iterable[Any]) -> None:
        """Add deny entries ``{"term", "label"[, "ignore_case"]}``."""
        self.engine.add_deny(entries)

    def add_allow(self, entries: Iterable[Any]) -> None:
        """Add allow entries ``{"term"}`` or ``{"regex"}`` (``[, "ignore_case"]``), or bare term strings."""
        self.engine.add_allow(entries)

    @property
    def patterns(self) -> List[Dict[str, Any]]:
        return [p.to_dict() for p in self.engine.patterns]

    @property
    def deny(self) -> List[Dict[str, Any]]:
        return [entry_dict(t) for t in self.engine.deny.terms]

    @property
    def allow(self) -> List[Dict[str, Any]]:
        return [entry_dict(e) for e in self.engine.allow.entries]

    def clear(self, kinds: Iterable[str] = tuple(LIST_FILES)) -> None:
        kinds = set(kinds)
        keep = {kind: ([] if kind in kinds else getattr(self, kind)) for kind in LIST_FILES}
        engine = self.engine
        self.engine = Recognizers(builtins=engine.builtins, labels=engine.labels, phone_regions=engine.phone_regions,
                                  ignore_case=engine.ignore_case, allow_partial=engine.allow_partial,
                                  patterns=keep["patterns"], deny=keep["deny"], allow=keep["allow"])
        self._matchers = None

    def initialize(self, get_examples: Optional[Callable[[], Iterable[Example]]] = None, *,
                   nlp: Optional[Language] = None, patterns: Optional[Iterable[Any]] = None,
                   deny: Optional[Iterable[Any]] = None, allow: Optional[Iterable[Any]] = None) -> None:
        """Replace the patterns, deny or allow entries given (e.g. from ``[initialize.components]`` readers)."""
        given = {"patterns": patterns, "deny": deny, "allow": allow}
        self.clear(kind for kind, entries in given.items() if entries is not None)
        for kind, entries in given.items():
            if entries is not None:
                getattr(self, f"add_{kind}")(entries)

    # -- running -------------------------------------------------------------------------------------------
    def __call__(self, doc: Doc) -> Doc:
        text = doc.text
        found, unaligned = self._align(doc, self.engine.find(text) + self._match(doc))
        merged, n_allowed = self.engine.resolve(text, read_found(doc, self.spans_key) + found)
        spans, scores, sources = [], [], []
        for item in merged:
            span = doc.char_span(item.start, item.end, label=item.label, alignment_mode="expand")
            if span is None:  # nothing but whitespace: nothing to redact
                unaligned += 1
                continue
            spans.append(span)
            scores.append(item.score)
            sources.append(item.source)
        previous = doc.spans[self.spans_key].attrs.get("unaligned", 0) if self.spans_key in doc.spans else 0
        write_group(doc, self.spans_key, spans, scores, sources, allowed=n_allowed,
                    unaligned=int(previous) + unaligned)
        return doc

    def pipe(self, stream: Iterable[Doc], *, batch_size: int = 128) -> Iterable[Doc]:
        for doc in stream:
            yield self(doc)

    @staticmethod
    def _align(doc: Doc, found: List[Found]) -> Tuple[List[Found], int]:
        """Snap character matches outward to token boundaries (as ``privacy_filter``'s default ``expand``)."""
        aligned, unaligned = [], 0
        for item in found:
            span = doc.char_span(item.start, item.end, alignment_mode="expand")
            if span is None or not len(span):
                unaligned += 1
            else:
                aligned.append(item._replace(start=span.start_char, end=span.end_char))
        return aligned, unaligned

    def _match(self, doc: Doc) -> List[Found]:
        """Phrase and token pattern matches (validators applied)."""
        rules = self.engine.matcher_patterns
        if not rules:
            return []
        if self._matchers is None:
            self._matchers = self._build_matchers(rules)
        found: List[Found] = []
        for matcher in self._matchers:
            for key, start, end in matcher(doc):
                rule = rules[int(self.vocab.strings[key])]
                span = doc[start:end]
                priority = rule.check(span.text)
                if priority is not None:
                    found.append(Found(rule.label, span.start_char, span.end_char, rule.score, rule.source,
                                       priority))
        return found

    def _build_matchers(self, rules: List[Pattern]) -> Tuple[Matcher, PhraseMatcher, PhraseMatcher]:
        tokens, exact, lower = Matcher(self.vocab, validate=True), PhraseMatcher(self.vocab), \
            PhraseMatcher(self.vocab, attr="LOWER")
        for i, rule in enumerate(rules):
            key = str(i)  # the rule's index: two rules may share a label and id but differ in score
            if rule.kind == "phrase":
                (lower if rule.ignore_case else exact).add(key, [self._make_doc(rule.pattern)])
                continue
            try:
                tokens.add(key, [list(rule.pattern)])
            except ValueError:  # spaCy's message quotes the pattern, which may hold personal data
                raise ConfigError(f"privacy_patterns: token pattern '{rule.name}' (label {rule.label}) is not a "
                                  f"valid spaCy Matcher pattern; see https://spacy.io/usage/rule-based-matching"
                                  ) from None
        return tokens, exact, lower

    # -- saving --------------------------------------------------------------------------------------------
    def _lists(self) -> Dict[str, List[Dict[str, Any]]]:
        return {kind: getattr(self, kind) for kind in LIST_FILES}

    def _load_lists(self, cfg: Dict[str, Any], lists: Dict[str, List[Any]]) -> None:
        if cfg.get("version") != SERIALIZATION_VERSION:
            raise CheckpointError(f"saved component '{self.name}' has an unknown format (version "
                                  f"{cfg.get('version')!r}); expected version {SERIALIZATION_VERSION}")
        self.clear()
        for kind in LIST_FILES:
            getattr(self, f"add_{kind}")(lists.get(kind) or [])

    def to_disk(self, path, *, exclude: Iterable[str] = tuple()) -> None:
        path = ensure_path(path)
        path.mkdir(parents=True, exist_ok=True)
        srsly.write_json(path / CFG_FILE, {"version": SERIALIZATION_VERSION})
        for kind, entries in self._lists().items():
            # The standard json module: srsly's parser reads 0.6 back as 0.6000000000000001.
            lines = "".join(json.dumps(entry, ensure_ascii=False) + "\n" for entry in entries)
            (path / LIST_FILES[kind]).write_text(lines, encoding="utf-8")

    def from_disk(self, path, *, exclude: Iterable[str] = tuple()) -> "PrivacyPatterns":
        path = ensure_path(path)
        lists = {kind: read_lines(path / name, kind, parse=False) if (path / name).is_file() else []
                 for kind, name in LIST_FILES.items()}
        self._load_lists(srsly.read_json(path / CFG_FILE), lists)
        return self

    def to_bytes(self, *, exclude: Iterable[str] = tuple()) -> bytes:
        return srsly.msgpack_dumps({"cfg": {"version": SERIALIZATION_VERSION}, **self._lists()})

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = tuple()) -> "PrivacyPatterns":
        data = srsly.msgpack_loads(bytes_data)
        self._load_lists(data.get("cfg", {}), data)
        return self
