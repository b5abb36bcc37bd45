"""Reading pattern, deny and allow files: JSONL (one object a line), or plain text for allow lists.

Errors name the file, the line and the field, never the line's content (a deny term may itself be PII).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, List, Literal, Tuple, Union, get_args

from ..errors import ConfigError
from .lists import parse_allow, parse_deny
from .patterns import parse_pattern

ListKind = Literal["patterns", "deny", "allow"]
LIST_KINDS: Tuple[str, ...] = get_args(ListKind)
_PARSERS: dict = {"patterns": parse_pattern, "deny": parse_deny, "allow": parse_allow}
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


def read_lines(path: Union[str, Path], kind: str, *, parse: bool = True) -> List[Any]:
    """The entries of one file: JSONL objects, or for ``allow`` a plain-text file with one term a line.

    With ``parse`` (default) each entry is checked and returned as a ``Pattern``/``DenyTerm``/``AllowEntry``;
    otherwise the raw dicts (or strings) are returned, checked all the same.
    """
    if kind not in LIST_KINDS:
        raise ConfigError(f"unknown list kind {kind!r}; expected one of {', '.join(LIST_KINDS)}")
    path = Path(path)
    parser: Callable[[Any, str], Any] = _PARSERS[kind]
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {kind} file ({exc.strerror or type(exc).__name__})") from None
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid utf-8 (byte {exc.start})") from None
    as_text = kind == "allow" and path.suffix.lower() not in JSONL_SUFFIXES
    entries: List[Any] = []
    for number, line in enumerate(content.splitlines(), 1):
        if not line.strip() or (as_text and line.lstrip().startswith("#")):
            continue
        where = f"{path}:{number}"
        if as_text:
            value: Any = line.strip()
        else:
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        parsed = parser(value, where)
        entries.append(parsed if parse else value)
    return entries
