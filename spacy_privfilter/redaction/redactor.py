"""Character spans -> redacted text. Pure functions and a ``Redactor``; no spaCy.

Data flow: ``text`` + ``CharSpan``s -> merged spans -> one replacement per span -> ``redacted_text`` plus one
record per replacement ``{start, end, label, replacement, redacted_start, redacted_end}`` (plain ints and strings,
so the records survive msgpack, ``DocBin`` and ``n_process``).

Styles (global, or per label through ``label_styles``):
    tag        ``tag_format`` with fields ``{label}``, ``{LABEL}`` (upper case) and ``{n}`` (1, 2, ... per label; the
               same value gets the same number within a document), e.g. ``"[{LABEL}]"``, ``"<{label}>"``,
               ``"[{LABEL}_{n}]"``.
    mask       ``mask_char`` repeated, length kept, every character masked; numbers in a written format (phone,
               card, SSN, date) keep their separators; ``keep_last`` keeps the last N letters/digits when the value
               has more than N.
    hash       keyed HMAC-SHA256 of the normalised value (case-folded, whitespace collapsed), truncated hex;
               stable across documents and runs for the same key. There is no unkeyed fallback.
    surrogate  realistic fake values (``surrogates.py``, needs Faker).
    remove     the empty string.

Errors never contain document or span text: only offsets, counts, labels and option names.
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

from ..errors import ConfigError
from ..spans import CharSpan
from .secrets import check_key_strength
from .values import (DEFAULT_HASH_KEY_ENV, STYLES, Style, hash_value, mask_value, normalize_value,
                     resolve_hash_key)

TAG_FIELDS = ("label", "LABEL", "n")
DEFAULT_TAG_FORMAT = "[{LABEL}]"
RECORD_KEYS = ("start", "end", "label", "replacement", "redacted_start", "redacted_end")


def _check_tag_format(tag_format: str) -> bool:
    """Validate ``tag_format``; return whether it numbers entities (has ``{n}``)."""
    if not isinstance(tag_format, str):
        raise ConfigError(f"tag_format must be a string; got {type(tag_format).__name__}")
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(tag_format) if name is not None]
    except ValueError as exc:
        raise ConfigError(f"tag_format is not a valid format string ({exc}); example: '[{{LABEL}}_{{n}}]'") from exc
    bad = [name for name in fields if name not in TAG_FIELDS]
    if bad:
        raise ConfigError(f"tag_format has unknown field(s) {bad}; valid fields: {', '.join(TAG_FIELDS)}")
    # A width or precision ("{LABEL:>9999999}", "{LABEL:.2}") could blow a tag up or cut it to nothing.
    specs = [name for _, name, spec, conversion in string.Formatter().parse(tag_format)
             if name is not None and (spec or conversion)]
    if specs:
        raise ConfigError(f"tag_format field(s) {specs} have a format spec or conversion (':...' or '!...'); only "
                          f"plain fields are allowed, e.g. '[{{LABEL}}_{{n}}]'")
    return "n" in fields


@dataclass(frozen=True)
class RedactionConfig:
    """How to redact. Frozen and hashable; secrets (the hash key) are passed to ``Redactor`` separately.

    Args:
        style: default style for every label.
        label_styles: per-label overrides, e.g. ``{"email": "hash", "date": "surrogate"}``.
        tag_format: format of ``tag`` replacements (fields: label, LABEL, n).
        mask_char: the single character used by ``mask``.
        keep_last: letters/digits left visible at the end of a masked value (0 = none).
        hash_length: hex characters kept from the HMAC-SHA256 digest (8-64).
        locale: Faker locale for surrogates.
        seed: key for surrogates; with a seed the same value gets the same surrogate in every document (and one
            date shift applies to all documents). Without one, surrogates are consistent within a document only.
        keep_mapping: keep the originals (records' ``"original"`` key and a replacement -> original mapping) so
            that ``restore`` can undo the redaction. Off by default: then no original value is kept.
    """

    style: Style = "tag"
    label_styles: Any = field(default_factory=tuple)  # Mapping in, sorted tuple of pairs stored (hashable)
    tag_format: str = DEFAULT_TAG_FORMAT
    mask_char: str = "*"
    keep_last: int = 0
    hash_length: int = 16
    locale: str = "en_US"
    seed: int | str | None = field(default=None, repr=False)  # a secret: never shown
    keep_mapping: bool = False

    def __post_init__(self) -> None:
        pairs = self.label_styles.items() if isinstance(self.label_styles, Mapping) else self.label_styles
        object.__setattr__(self, "label_styles", tuple(sorted((str(k), v) for k, v in pairs)))
        for key, value in [("style", self.style)] + [(f"label_styles[{k!r}]", v) for k, v in self.label_styles]:
            if value not in STYLES:
                raise ConfigError(f"{key} must be one of {', '.join(STYLES)}; got {value!r}")
        _check_tag_format(self.tag_format)
        if not isinstance(self.mask_char, str) or len(self.mask_char) != 1:
            raise ConfigError(f"mask_char must be exactly one character; got {self.mask_char!r}")
        if isinstance(self.keep_last, bool) or not isinstance(self.keep_last, int) or self.keep_last < 0:
            raise ConfigError(f"keep_last must be an integer >= 0; got {self.keep_last!r}")
        if isinstance(self.hash_length, bool) or not isinstance(self.hash_length, int) \
                or not 8 <= self.hash_length <= 64:
            raise ConfigError(f"hash_length must be an integer from 8 to 64; got {self.hash_length!r}")
        if not isinstance(self.locale, str) or not self.locale:
            raise ConfigError(f"locale must be a Faker locale name such as 'en_US'; got {self.locale!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, (int, str))):
            raise ConfigError(f"seed must be an integer, a string or None; got {type(self.seed).__name__}")
        if not isinstance(self.keep_mapping, bool):
            raise ConfigError(f"keep_mapping must be true or false; got {self.keep_mapping!r}")

    def style_for(self, label: str) -> str:
        return dict(self.label_styles).get(label, self.style)

    @property
    def styles_used(self) -> frozenset[str]:
        return frozenset([self.style, *(style for _, style in self.label_styles)])


def _as_char_span(span: Any) -> CharSpan:
    if isinstance(span, CharSpan):
        return span
    if isinstance(span, Mapping):
        return CharSpan(str(span["label"]), int(span["start"]), int(span["end"]), float(span.get("score", 1.0)))
    if isinstance(span, tuple):
        label, start, end, *rest = span
        return CharSpan(str(label), int(start), int(end), float(rest[0]) if rest else 1.0)
    return CharSpan(str(span.label), int(span.start), int(span.end), float(getattr(span, "score", 1.0)))


def merge_spans(spans: Iterable[Any], *, text_length: int | None = None) -> list[CharSpan]:
    """Sort spans and merge every group of overlapping or touching spans into one.

    Rule: spans that overlap or touch (``a.end >= b.start``) form one group. The group covers the union of its
    members (so every input character stays covered); its label and score are those of the member with the highest
    score, ties broken by the longer span, then the earlier start. Empty spans are dropped.

    Args:
        spans: ``CharSpan``s, ``(label, start, end[, score])`` tuples, dicts or objects with those attributes.
        text_length: when given, offsets must satisfy ``0 <= start <= end <= text_length``.
    """
    items = sorted((_as_char_span(s) for s in spans), key=lambda s: (s.start, s.end))
    for i, span in enumerate(items):
        if span.start < 0 or span.end < span.start or (text_length is not None and span.end > text_length):
            raise ValueError(f"span {i} has invalid offsets ({span.start}, {span.end}) for a text of "
                             f"{text_length} characters")
    merged: list[CharSpan] = []
    group: list[CharSpan] = []
    group_end = -1
    for span in (s for s in items if s.end > s.start):
        if group and span.start > group_end:
            merged.append(_merge_group(group))
            group = []
        group.append(span)
        group_end = max(group_end, span.end)
    if group:
        merged.append(_merge_group(group))
    return merged


def _merge_group(group: list[CharSpan]) -> CharSpan:
    winner = max(group, key=lambda s: (s.score, s.end - s.start, -s.start))
    return CharSpan(winner.label, group[0].start, max(s.end for s in group), winner.score)


class Redaction(NamedTuple):
    """What ``Redactor.redact`` returns. ``mapping`` is None unless ``keep_mapping`` (see ``lossless_mapping``)."""

    redacted_text: str
    redactions: list[dict]
    mapping: dict[str, str | None] | None


def lossless_mapping(redactions: Iterable[Mapping[str, Any]]) -> dict[str, str | None]:
    """``{replacement: original}`` from records with originals. A replacement that stands for two different
    originals (a plain tag, a mask of the same length) maps to None, so nothing is silently restored wrongly:
    ``restore`` refuses it, and the records (which keep every original with its offsets) still restore exactly."""
    mapping: dict[str, str | None] = {}
    for record in redactions:
        replacement, original = record["replacement"], record["original"]
        if replacement:
            mapping[replacement] = original if mapping.get(replacement, original) == original else None
    return mapping


class Redactor:
    """Applies a ``RedactionConfig`` to texts. Holds the hash key and the Faker instance; no per-document state.

    Args:
        config: the styles and options.
        hash_key: HMAC key (bytes or str); required when any style is ``hash``.
    """

    def __init__(self, config: RedactionConfig | None = None, *, hash_key: str | bytes | None = None) -> None:
        self.config = config or RedactionConfig()
        self._numbered = _check_tag_format(self.config.tag_format)
        self._hash_key = resolve_hash_key(hash_key, None)
        if "hash" in self.config.styles_used and not self._hash_key:
            raise ConfigError(f"style 'hash' needs a key: pass hash_key or set the environment variable named by "
                              f"hash_key_env (default {DEFAULT_HASH_KEY_ENV}); an unkeyed hash is not offered "
                              f"because common values can be recovered from it")
        if "hash" in self.config.styles_used:
            check_key_strength(self._hash_key)
        self._surrogates = None
        if "surrogate" in self.config.styles_used:
            from .surrogates import SurrogateFactory  # Faker is optional; imported only when asked for

            self._surrogates = SurrogateFactory(locale=self.config.locale, seed=self.config.seed)

    def redact(self, text: str, spans: Iterable[Any]) -> Redaction:
        """Replace every span of ``text``; replacements are applied right to left from the original offsets."""
        merged = merge_spans(spans, text_length=len(text))
        replacements = self._replacements(text, merged)
        pieces: list[str] = []
        cursor = len(text)
        for span, replacement in zip(reversed(merged), reversed(replacements)):
            pieces.append(text[span.end:cursor])
            pieces.append(replacement)
            cursor = span.start
        pieces.append(text[:cursor])
        redacted_text = "".join(reversed(pieces))
        redactions: list[dict] = []
        shift = 0
        for span, replacement in zip(merged, replacements):
            record = {"start": span.start, "end": span.end, "label": span.label, "replacement": replacement,
                      "redacted_start": span.start + shift, "redacted_end": span.start + shift + len(replacement)}
            if self.config.keep_mapping:
                record["original"] = text[span.start:span.end]
            redactions.append(record)
            shift += len(replacement) - (span.end - span.start)
        mapping = lossless_mapping(redactions) if self.config.keep_mapping else None
        return Redaction(redacted_text, redactions, mapping)

    def _replacements(self, text: str, merged: Sequence[CharSpan]) -> list[str]:
        """One replacement per merged span, computed left to right so tag numbers follow reading order."""
        numbers: dict[str, dict[str, int]] = {}
        session = None
        if self._surrogates is not None:  # every value of the document: none may reappear inside a surrogate
            session = self._surrogates.new_document(text[s.start:s.end] for s in merged)
        out = []
        for span in merged:
            value = text[span.start:span.end]
            style = self.config.style_for(span.label)
            if style == "tag":
                per_label = numbers.setdefault(span.label, {})
                n = per_label.setdefault(normalize_value(value), len(per_label) + 1) if self._numbered else 0
                out.append(self.config.tag_format.format(label=span.label, LABEL=span.label.upper(), n=n))
            elif style == "mask":
                out.append(mask_value(value, mask_char=self.config.mask_char, keep_last=self.config.keep_last))
            elif style == "hash":
                out.append(hash_value(value, key=self._hash_key, length=self.config.hash_length))
            elif style == "surrogate":
                out.append(session.surrogate(span.label, value))
            else:
                out.append("")
        return out


def redact_text(text: str, spans: Iterable[Any], *, hash_key: str | bytes | None = None,
                hash_key_env: str | None = DEFAULT_HASH_KEY_ENV, **options: Any) -> Redaction:
    """Redact one text. ``options`` are ``RedactionConfig`` fields (style, label_styles, tag_format, ...).

    For many texts build one ``Redactor`` and call ``redact`` on each; that reuses the Faker instance.
    """
    redactor = Redactor(RedactionConfig(**options), hash_key=resolve_hash_key(hash_key, hash_key_env))
    return redactor.redact(text, spans)


def restore(redacted_text: str, mapping: Sequence[Mapping[str, Any]] | Mapping[str, str | None], *,
            edited: bool = False) -> str:
    """Undo a redaction made with ``keep_mapping=True``.

    Args:
        redacted_text: the redacted text; unchanged, or (with ``edited``) changed afterwards.
        mapping: either the redaction records (``doc._.redactions`` / ``Redaction.redactions``), which restore the
            original exactly for every style, or a ``{replacement: original}`` dict (``doc._.redaction_mapping``),
            which is applied by string substitution and is exact only when each replacement is unique and appears
            nowhere else in the text (numbered tags, hashes, surrogates; not plain tags, masks or removals).
        edited: the text was changed after redaction (e.g. an LLM rewrote it around the placeholders): every
            occurrence of a replacement is restored, wherever it now is. Records are then used like a dict.

    Raises:
        ValueError: a record has no original; the records do not match an unedited text; or (dict / edited) a
            replacement that occurs in the text stands for more than one original, or a removed value (empty
            replacement) cannot be placed. Messages give counts and indices, never text.
    """
    if isinstance(mapping, Mapping) or edited:
        if not isinstance(mapping, Mapping):
            records = list(mapping)
            _check_originals(records)
            removed = sum(1 for r in records if not r["replacement"])
            if removed:
                raise ValueError(f"{removed} value(s) were removed (empty replacement); there is no placeholder to "
                                 f"restore them from in edited text")
            mapping = lossless_mapping(records)
        return _substitute(redacted_text, mapping)
    records = sorted(mapping, key=lambda r: r["redacted_start"])
    _check_originals(records)
    pieces: list[str] = []
    cursor = 0
    for i, record in enumerate(records):
        start, end = int(record["redacted_start"]), int(record["redacted_end"])
        if start < cursor or redacted_text[start:end] != record["replacement"]:
            raise ValueError(f"redaction record {i} does not match the text at offsets ({start}, {end}); "
                             f"the redacted text was changed after redaction (pass edited=True to restore "
                             f"from the placeholders)")
        pieces.append(redacted_text[cursor:start])
        pieces.append(record["original"])
        cursor = end
    pieces.append(redacted_text[cursor:])
    return "".join(pieces)


def _check_originals(records: Sequence[Mapping[str, Any]]) -> None:
    for i, record in enumerate(records):
        if "original" not in record:
            raise ValueError(f"redaction record {i} has no 'original'; redact with keep_mapping=True to restore")


def _substitute(text: str, mapping: Mapping[str, str | None]) -> str:
    """Replace every occurrence of a replacement (longest first) by its original; refuse ambiguous ones."""
    keys = sorted((k for k in mapping if k), key=len, reverse=True)
    if not keys:
        return text
    pattern = re.compile("|".join(re.escape(k) for k in keys))
    ambiguous = sum(1 for k in {m.group(0) for m in pattern.finditer(text)} if mapping[k] is None)
    if ambiguous:
        raise ValueError(f"{ambiguous} replacement(s) in the text each stand for more than one original value, so "
                         f"they cannot be restored by substitution; use numbered tags (tag_format "
                         f"'[{{LABEL}}_{{n}}]'), hashes or surrogates, or restore the unedited text from the records")
    return pattern.sub(lambda m: mapping[m.group(0)], text)
