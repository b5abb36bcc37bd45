"""Text fields of a record: dotted paths into nested objects, strings or lists of strings.

A record is a JSON-like dict (a JSONL line, or one row of a table). ``text_keys`` name the fields to scrub;
``note.body`` walks into nested objects. A field holds one string or a list of strings; every string becomes one
document. Pure Python, no spaCy: the CLI, the engine-neutral core and the engine workers all share it, so a record
is split into documents and put back together the same way wherever it is scrubbed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

OnMissing = Literal["error", "skip"]
OnError = Literal["row", "job"]


class FieldError(ValueError):
    """A named field is missing, null or not text. The message names the field, never its value."""


@dataclass(frozen=True)
class Slot:
    """Where one document of a record lives: the field path and, for a list field, the index in the list."""

    path: tuple[str, ...]
    index: int | None = None


def parse_keys(text_keys: str | Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """``["subject", "note.body"]`` -> ``(("subject",), ("note", "body"))``; duplicates and empty parts refused."""
    keys = [text_keys] if isinstance(text_keys, str) else list(text_keys)
    if not keys:
        raise ValueError("at least one text key is needed")
    paths: list[tuple[str, ...]] = []
    for key in keys:
        path = tuple(str(key).split("."))
        if not all(part for part in path):
            raise ValueError(f"text key {key!r} has an empty part; use dotted names such as note.body")
        if path in paths:
            raise ValueError(f"text key {key!r} is given twice")
        paths.append(path)
    for path in paths:
        for other in paths:
            if other != path and other[:len(path)] == path:
                raise ValueError(f"text keys {'.'.join(path)!r} and {'.'.join(other)!r} overlap")
    return tuple(paths)


def key_name(path: Sequence[str]) -> str:
    return ".".join(path)


def lookup(record: Any, path: Sequence[str]) -> tuple[bool, Any]:
    """``(found, value)`` of ``path`` in ``record``; a part that is not inside an object is not found."""
    value = record
    for part in path:
        if not isinstance(value, Mapping) or part not in value:
            return False, None
        value = value[part]
    return True, value


def field_problem(found: bool, value: Any) -> str | None:
    """Why a field value cannot be scrubbed (None when it can): the reason names a type, never the value."""
    if not found:
        return "missing"
    if value is None:
        return "null"
    if isinstance(value, str):
        return None
    if isinstance(value, (list, tuple)):
        bad = next((i for i, item in enumerate(value) if not isinstance(item, str)), None)
        if bad is None:
            return None
        return f"a list whose item {bad} is {'null' if value[bad] is None else 'a ' + type(value[bad]).__name__}"
    return f"a {type(value).__name__}, not a string"


def extract(record: Any, paths: Sequence[Sequence[str]], *,
            on_missing: OnMissing = "error") -> tuple[list[Slot], list[str]]:
    """The documents of ``record``: their slots and texts, in key order, list items in list order.

    A field that is missing, null or not text raises ``FieldError`` (naming the field, never the value); with
    ``on_missing="skip"`` it is left as it is and yields no document.
    """
    slots: list[Slot] = []
    texts: list[str] = []
    for path in paths:
        found, value = lookup(record, path)
        problem = field_problem(found, value)
        if problem is not None:
            if on_missing == "skip":
                continue
            raise FieldError(f"key {key_name(path)!r} is {problem}")
        if isinstance(value, str):
            slots.append(Slot(tuple(path)))
            texts.append(value)
        else:
            for index, item in enumerate(value):
                slots.append(Slot(tuple(path), index))
                texts.append(item)
    return slots, texts


def replace(record: Any, slots: Sequence[Slot], texts: Sequence[str]) -> Any:
    """A copy of ``record`` with each slot's text replaced; the input record is left unchanged.

    Only the objects on a slot's path are copied; key order is kept, so JSON output keeps its key order.
    """
    if len(slots) != len(texts):
        raise ValueError(f"{len(slots)} slots but {len(texts)} texts")
    out = _copy(record)
    for slot, text in zip(slots, texts):
        parent = out
        for part in slot.path[:-1]:
            parent[part] = _copy(parent[part])
            parent = parent[part]
        last = slot.path[-1]
        if slot.index is None:
            parent[last] = text
        else:
            if not isinstance(parent[last], list) or parent[last] is _original_list(record, slot.path):
                parent[last] = list(parent[last])
            parent[last][slot.index] = text
    return out


def _copy(value: Any) -> Any:
    return dict(value) if isinstance(value, Mapping) else value


def _original_list(record: Any, path: Sequence[str]) -> Any:
    return lookup(record, path)[1]


def group(values: Sequence[Any], counts: Sequence[int]) -> list[list[Any]]:
    """Split a flat list back into consecutive groups of the given sizes (one group per record)."""
    out: list[list[Any]] = []
    start = 0
    for count in counts:
        out.append(list(values[start:start + count]))
        start += count
    if start != len(values):
        raise ValueError(f"{len(values)} values for groups totalling {start}")
    return out


def by_key(paths: Sequence[Sequence[str]], slots: Sequence[Slot], values: Sequence[Any]) -> Any:
    """Per-document values (spans, redactions) shaped like the fields: a list per string field, a list of
    lists per list field. One text key gives that key's value alone (the shape a single ``--text-key`` always
    had); several give ``{key: value}`` for the fields present."""
    shaped: dict[str, Any] = {}
    for slot, value in zip(slots, values):
        name = key_name(slot.path)
        if slot.index is None:
            shaped[name] = value
        else:
            shaped.setdefault(name, []).append(value)
    if len(paths) == 1:
        return shaped.get(key_name(paths[0]), [])
    return shaped


def drop(record: Any, paths: Sequence[Sequence[str]]) -> Any:
    """A copy of ``record`` without the fields at ``paths`` (nested objects copied, the input unchanged)."""
    out = _copy(record)
    for path in paths:
        parent = out
        for part in path[:-1]:
            if not isinstance(parent, Mapping) or not isinstance(parent.get(part), Mapping):
                parent = None
                break
            parent[part] = _copy(parent[part])
            parent = parent[part]
        if isinstance(parent, dict):
            parent.pop(path[-1], None)
    return out


def scrubbed_record(record: Any, paths: Sequence[Sequence[str]], slots: Sequence[Slot], redacted: Sequence[str],
                    redactions: Sequence[Any] | None = None) -> Any:
    """``record`` with its documents replaced by their redacted texts, plus ``"redactions"`` (shaped by
    ``by_key``) when given. Every engine builds its output records with this one function."""
    out = replace(record, slots, redacted)
    if redactions is not None:
        out["redactions"] = by_key(paths, slots, redactions)
    return out
