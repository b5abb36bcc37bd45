"""Pattern rules and what they find, as plain data: no spaCy here.

A pattern line (JSONL or config) is span_ruler's format plus three optional keys, so span_ruler pattern
files load unchanged:

    {"label": "medical_record_number", "regex": "MRN[:# ]*(?P<value>\\d{7})", "id": "mrn", "score": 0.95}
    {"label": "company_name", "pattern": "Acme Health"}                                   (phrase)
    {"label": "unique_id", "pattern": [{"TEXT": {"REGEX": "^ST-\\d+$"}}], "validator": "luhn"}  (tokens)

``regex`` patterns run on the text (character offsets; a group named ``value`` narrows the span to that
group, so context such as ``MRN:`` can be required without being redacted). ``pattern`` strings and token
lists are spaCy PhraseMatcher / Matcher patterns, run by the ``privacy_patterns`` component.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, List, Literal, Mapping, NamedTuple, Optional, Tuple, Union, get_args

from ..errors import ConfigError
from ..spans import is_probability, trim_whitespace
from .validators import get_validator

PatternKind = Literal["regex", "phrase", "tokens"]
PATTERN_KINDS: Tuple[str, ...] = get_args(PatternKind)
PATTERN_KEYS = ("label", "pattern", "regex", "id", "score", "validator", "ignore_case")

# Merge priority (see merge.py): a deny-list term, then a pattern whose validator accepted the match,
# then everything else (model spans, unvalidated patterns, spans other components added).
PRIORITY_DENY, PRIORITY_VALIDATED, PRIORITY_OTHER = 3, 2, 1


class Found(NamedTuple):
    """A span found in a text: ``text[start:end]`` is a ``label``; ``source`` says what found it.

    ``source`` is ``"model"``, ``"pattern:<name>"``, ``"deny"`` or ``"external"`` (another component).
    """

    label: str
    start: int
    end: int
    score: float
    source: str
    priority: int = PRIORITY_OTHER


def pattern_source(name: str) -> str:
    return f"pattern:{name}"


@dataclass(frozen=True)
class Pattern:
    """One rule. ``pattern`` is a regex or phrase string, or a tuple of Matcher token dicts (``kind``)."""

    label: str
    kind: str
    pattern: Union[str, Tuple[Mapping[str, Any], ...]]
    name: str = ""
    score: float = 1.0
    validator: Optional[str] = None
    ignore_case: bool = False
    _compiled: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", self.label)
        if self.validator is not None:
            get_validator(self.validator)  # unknown names fail when the rule is made, not on the first match
        if self.kind == "regex":
            object.__setattr__(self, "_compiled", re.compile(self.pattern, re.IGNORECASE if self.ignore_case else 0))

    @property
    def source(self) -> str:
        return pattern_source(self.name)

    def check(self, value: str) -> Optional[int]:
        """The merge priority of a match of ``value``, or None when the validator rejects it."""
        if self.validator is None:
            return PRIORITY_OTHER
        return PRIORITY_VALIDATED if get_validator(self.validator)(value) else None

    def find(self, text: str) -> List[Found]:
        """Matches of a ``regex`` pattern in ``text`` (other kinds need spaCy: see the component)."""
        found: List[Found] = []
        has_value = "value" in self._compiled.groupindex
        for match in self._compiled.finditer(text):
            start, end = match.span("value") if has_value else match.span()
            start, end = trim_whitespace(text, max(start, 0), max(end, 0))
            if start >= end:
                continue
            priority = self.check(text[start:end])
            if priority is not None:
                found.append(Found(self.label, start, end, self.score, self.source, priority))
        return found

    def to_dict(self) -> dict:
        """The pattern line (JSONL/config) this rule was read from, with defaults left out."""
        out: dict = {"label": self.label}
        if self.kind == "regex":
            out["regex"] = self.pattern
        else:
            out["pattern"] = self.pattern if self.kind == "phrase" else [dict(t) for t in self.pattern]
        if self.name != self.label:
            out["id"] = self.name
        if self.score != 1.0:
            out["score"] = self.score
        if self.validator is not None:
            out["validator"] = self.validator
        if self.ignore_case:
            out["ignore_case"] = True
        return out


def parse_pattern(entry: Any, where: str) -> Pattern:
    """A ``Pattern`` from one pattern line; errors name ``where`` (e.g. ``file:line``) and the field."""
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: a pattern must be an object with 'label' and 'pattern' or 'regex'; "
                          f"got {type(entry).__name__}")
    unknown = sorted(k for k in entry if k not in PATTERN_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown pattern key(s) {', '.join(map(repr, unknown))}; valid keys: "
                          f"{', '.join(PATTERN_KEYS)}")
    label = entry.get("label")
    if not isinstance(label, str) or not label.strip():
        raise ConfigError(f"{where}: 'label' must be a non-empty string")
    if ("pattern" in entry) == ("regex" in entry):
        raise ConfigError(f"{where}: give exactly one of 'pattern' (phrase or token list) and 'regex'")
    name = entry.get("id", label)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: 'id' must be a non-empty string")
    score = entry.get("score", 1.0)
    if not is_probability(score):
        raise ConfigError(f"{where}: 'score' must be a number between 0 and 1")
    validator = entry.get("validator")
    if validator is not None and not isinstance(validator, str):
        raise ConfigError(f"{where}: 'validator' must be a validator name")
    ignore_case = entry.get("ignore_case", False)
    if not isinstance(ignore_case, bool):
        raise ConfigError(f"{where}: 'ignore_case' must be true or false")
    kind, pattern = _kind_of(entry, where)
    try:
        return Pattern(label, kind, pattern, name=name, score=float(score), validator=validator,
                       ignore_case=ignore_case)
    except re.error as exc:
        raise ConfigError(f"{where}: 'regex' does not compile ({exc.msg} at position {exc.pos})") from None
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _kind_of(entry: Mapping[str, Any], where: str) -> Tuple[str, Any]:
    if "regex" in entry:
        if not isinstance(entry["regex"], str) or not entry["regex"]:
            raise ConfigError(f"{where}: 'regex' must be a non-empty string")
        return "regex", entry["regex"]
    pattern = entry["pattern"]
    if isinstance(pattern, str) and pattern.strip():
        return "phrase", pattern
    if isinstance(pattern, list) and pattern and all(isinstance(t, Mapping) for t in pattern):
        return "tokens", tuple(dict(t) for t in pattern)
    raise ConfigError(f"{where}: 'pattern' must be a phrase string or a non-empty list of token objects")
