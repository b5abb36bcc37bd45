"""Deny lists (terms that are always PII of a given label) and allow lists (text that is never PII).

Entry lines, one JSON object each:

    deny:  {"term": "Project Nightingale", "label": "company_name", "ignore_case": true}
    allow: {"term": "Riverside Clinic"}    or    {"regex": "Dr\\.? [A-Z]\\w+ Ward"}

A term matches on word boundaries (``Ann`` does not match inside ``Annual``). ``ignore_case`` is optional
per entry; without it the list's default applies. Nothing here logs text: callers count.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Pattern, Sequence, Tuple

from ..errors import ConfigError
from .patterns import PRIORITY_DENY, Found

DENY_SOURCE = "deny"
DENY_KEYS = ("term", "label", "ignore_case")
ALLOW_KEYS = ("term", "regex", "ignore_case")


@dataclass(frozen=True)
class DenyTerm:
    term: str
    label: str
    ignore_case: Optional[bool] = None


@dataclass(frozen=True)
class AllowEntry:
    term: Optional[str] = None
    regex: Optional[str] = None
    ignore_case: Optional[bool] = None


def terms_regex(terms: Iterable[str], *, ignore_case: bool) -> Optional[Pattern[str]]:
    """One regex matching any of ``terms`` on word boundaries, longest first; None for no terms."""
    parts = []
    for term in sorted(set(terms), key=lambda t: (-len(t), t)):
        head = r"(?<!\w)" if re.match(r"\w", term[0]) else ""
        tail = r"(?!\w)" if re.match(r"\w", term[-1]) else ""
        parts.append(head + re.escape(term) + tail)
    if not parts:
        return None
    return re.compile("|".join(parts), re.IGNORECASE if ignore_case else 0)


def _split_case(entries: Iterable[Any], default: bool) -> Tuple[List[Any], List[Any]]:
    sensitive, insensitive = [], []
    for entry in entries:
        (insensitive if (default if entry.ignore_case is None else entry.ignore_case) else sensitive).append(entry)
    return sensitive, insensitive


class DenyList:
    """Finds deny-list terms in a text: each becomes a span of its label (source ``deny``, top priority)."""

    def __init__(self, terms: Sequence[DenyTerm], *, ignore_case: bool = False) -> None:
        self.terms = list(terms)
        sensitive, insensitive = _split_case(self.terms, ignore_case)
        self._labels: Dict[str, str] = {t.term: t.label for t in sensitive}
        self._labels_ci: Dict[str, str] = {t.term.lower(): t.label for t in insensitive}
        self._regexes = [(rx, ci) for rx, ci in ((terms_regex(self._labels, ignore_case=False), False),
                                                 (terms_regex([t.term for t in insensitive], ignore_case=True), True))
                         if rx is not None]

    def find(self, text: str) -> List[Found]:
        found: List[Found] = []
        for regex, ci in self._regexes:
            for match in regex.finditer(text):
                value = match.group()
                label = self._labels_ci.get(value.lower()) if ci else self._labels.get(value)
                if label is None:  # a case mapping that str.lower and re.IGNORECASE see differently
                    label = next(t.label for t in self.terms if re.fullmatch(re.escape(t.term), value, re.I))
                found.append(Found(label, match.start(), match.end(), 1.0, DENY_SOURCE, PRIORITY_DENY))
        return found


class AllowList:
    """Decides whether a detected value is allowed (never PII): exact terms or regexes.

    ``allows(value)`` is true when ``value`` equals an allowed term or fully matches an allowed regex; with
    ``partial=True`` also when an allowed term or regex occurs anywhere inside it (terms on word boundaries).
    """

    def __init__(self, entries: Sequence[AllowEntry], *, ignore_case: bool = False) -> None:
        self.entries = list(entries)
        sensitive, insensitive = _split_case(self.entries, ignore_case)
        self._exact = {e.term for e in sensitive if e.term is not None}
        self._exact_ci = {e.term.lower() for e in insensitive if e.term is not None}
        self._regexes = [re.compile(e.regex) for e in sensitive if e.regex is not None] + \
                        [re.compile(e.regex, re.IGNORECASE) for e in insensitive if e.regex is not None]
        self._partial = [rx for rx in (terms_regex(self._exact, ignore_case=False),
                                       terms_regex(self._exact_ci, ignore_case=True)) if rx is not None]

    def __len__(self) -> int:
        return len(self.entries)

    def allows(self, value: str, *, partial: bool = False) -> bool:
        value = value.strip()
        if value in self._exact or value.lower() in self._exact_ci:
            return True
        if any(rx.fullmatch(value) for rx in self._regexes):
            return True
        return partial and any(rx.search(value) for rx in self._partial + self._regexes)


def _check_keys(entry: Any, keys: Tuple[str, ...], where: str, kind: str) -> Mapping[str, Any]:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: a {kind} entry must be an object; got {type(entry).__name__}")
    unknown = sorted(k for k in entry if k not in keys)
    if unknown:
        raise ConfigError(f"{where}: unknown {kind} key(s) {', '.join(map(repr, unknown))}; valid keys: "
                          f"{', '.join(keys)}")
    ignore_case = entry.get("ignore_case")
    if ignore_case is not None and not isinstance(ignore_case, bool):
        raise ConfigError(f"{where}: 'ignore_case' must be true or false")
    return entry


def _non_empty(entry: Mapping[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: '{key}' must be a non-empty string")
    return value


def parse_deny(entry: Any, where: str) -> DenyTerm:
    entry = _check_keys(entry, DENY_KEYS, where, "deny")
    term = _non_empty(entry, "term", where).strip()
    return DenyTerm(term, _non_empty(entry, "label", where), entry.get("ignore_case"))


def parse_allow(entry: Any, where: str) -> AllowEntry:
    """An allow entry from an object, or from a bare string (one exact term, as in a plain-text file)."""
    if isinstance(entry, str):
        entry = {"term": entry}
    entry = _check_keys(entry, ALLOW_KEYS, where, "allow")
    if ("term" in entry) == ("regex" in entry):
        raise ConfigError(f"{where}: give exactly one of 'term' and 'regex'")
    if "term" in entry:
        return AllowEntry(term=_non_empty(entry, "term", where).strip(), ignore_case=entry.get("ignore_case"))
    regex = _non_empty(entry, "regex", where)
    try:
        re.compile(regex)
    except re.error as exc:
        raise ConfigError(f"{where}: 'regex' does not compile ({exc.msg} at position {exc.pos})") from None
    return AllowEntry(regex=regex, ignore_case=entry.get("ignore_case"))


def entry_dict(entry: Any) -> Dict[str, Any]:
    """The JSON line of a ``DenyTerm`` or ``AllowEntry`` (defaults left out)."""
    return {k: v for k, v in vars(entry).items() if v is not None}
