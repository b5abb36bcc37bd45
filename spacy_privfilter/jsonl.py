"""Reading JSONL files of records: one reader, with messages that name the file and line, never the content.

Used by the command line (evaluate's gold and prediction files) and by training (labelled data).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator


def json_error(exc: json.JSONDecodeError) -> str:
    """``invalid JSON (reason, column N)``; json's own messages may end in " at" before the position."""
    return f"invalid JSON ({exc.msg.removesuffix(' at')}, column {exc.colno})"


def unreadable_json(exc: BaseException) -> str:
    """What went wrong in a JSON line that the parser could not finish, without quoting it."""
    if isinstance(exc, RecursionError):
        return "unreadable JSON (nested too deeply)"
    if isinstance(exc, MemoryError):
        return "unreadable JSON (too large to hold in memory)"
    return f"unreadable JSON ({type(exc).__name__}, e.g. a number with more digits than Python reads)"


def read_records(path: Path, *, error: type[Exception]) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` for each non-blank line of ``path``.

    Raises:
        error: the file cannot be read, or a line is not valid UTF-8, not JSON (huge integers and deep nesting
            included) or not a JSON object; the message names file and line.
    """
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from exc
    with handle:
        for number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise error(f"{path}:{number}: not valid utf-8 (byte {exc.start} of the line)") from exc
            except json.JSONDecodeError as exc:
                raise error(f"{path}:{number}: {json_error(exc)}") from exc
            except (ValueError, RecursionError, MemoryError) as exc:  # huge integers, deep nesting
                raise error(f"{path}:{number}: {unreadable_json(exc)}") from None
            if not isinstance(record, dict):
                raise error(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            yield number, record
