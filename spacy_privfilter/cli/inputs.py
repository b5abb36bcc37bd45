"""Command-line input: files, folders, JSONL and stdin turned into a lazy stream of documents.

Every input position (a whole text file, or one line of a JSONL / line-per-document input) becomes one
``Item``, read only when the stream reaches it, so memory stays flat however large the input. Bad input
(missing file, binary file, wrong encoding, invalid JSON line) becomes an ``Item`` with an ``error`` that
names the file and line but never the text. Positions are counted the same way on every run, which is
what ``--resume`` relies on to skip work already written.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Literal, Sequence, get_args

from ..jsonl import json_error, unreadable_json
from ..scale.fields import FieldError, OnMissing, Slot, extract, parse_keys

Format = Literal["auto", "text", "jsonl", "lines", "csv", "parquet"]
FORMATS: tuple[str, ...] = get_args(Format)
JSONL_SUFFIXES = (".jsonl", ".ndjson")
TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
TABLE_KINDS = ("csv", "parquet")
BINARY_SNIFF_BYTES = 8192
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
log = logging.getLogger("spacy_privfilter.cli")


class UsageError(Exception):
    """The command line itself is wrong (exit code 2)."""


@dataclass(frozen=True)
class Source:
    """One input file (or stdin when ``path`` is None).

    Attributes:
        path: the file to read; None for stdin.
        kind: "text" (the whole file is one document), "jsonl" (one JSON object per line), "lines"
            (one document per line), or a table ("csv", "parquet"; one record per row).
        dest: output name relative to the output folder (used when writing a mirrored tree).
        display: the name used in messages.
    """

    path: Path | None
    kind: str
    dest: str
    display: str


@dataclass(frozen=True)
class Item:
    """One input position: a document to process, a blank line to pass over, or an error to report.

    A JSONL record carries its documents in ``texts`` (one per string of its text fields, see ``slots``).
    """

    source: Source
    line: int | None
    text: str | None = None
    record: dict[str, Any] | None = None
    error: str | None = None
    slots: tuple[Slot, ...] = ()
    texts: tuple[str, ...] = ()

    @property
    def documents(self) -> tuple[str, ...]:
        """The texts to run through the pipeline for this position."""
        if self.record is not None:
            return self.texts
        return () if self.text is None else (self.text,)

    @property
    def where(self) -> str:
        return f"{self.source.display}:{self.line}" if self.line is not None else self.source.display


def source_kind(path: Path | None, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    if path is not None and path.suffix.lower() in JSONL_SUFFIXES:
        return "jsonl"
    if path is not None and path.suffix.lower() in TABLE_SUFFIXES:
        return TABLE_SUFFIXES[path.suffix.lower()]
    return "text"


def discover(inputs: Sequence[str], *, fmt: str = "auto", glob: str = "*") -> list[Source]:
    """Expand the INPUT arguments into sources, folders walked recursively in sorted (stable) order.

    Hidden files and folders (name starting with ".") are skipped inside folders. A path that does not
    exist is kept as a source; reading it reports the error, so the other inputs still run.
    """
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    if list(inputs).count("-") > 1:
        raise UsageError("'-' (stdin) can be given only once")
    sources: list[Source] = []
    for arg in inputs:
        if arg == "-":
            sources.append(Source(None, source_kind(None, fmt), "-", "<stdin>"))
            continue
        path = Path(arg)
        if path.is_dir():
            for file in walk(path, glob):
                rel = file.relative_to(path).as_posix()
                dest = rel if len(inputs) == 1 else f"{path.name}/{rel}"
                sources.append(Source(file, source_kind(file, fmt), dest, str(file)))
        else:
            sources.append(Source(path, source_kind(path, fmt), path.name, str(path)))
    return sources


def walk(folder: Path, glob: str) -> list[Path]:
    """Files under ``folder`` whose name matches ``glob``, sorted, hidden entries skipped."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(root) / f for f in files if not f.startswith(".") and fnmatch.fnmatch(f, glob))
    return sorted(found, key=lambda p: p.relative_to(folder).parts)


class StdinDigest:
    """sha256 of the stdin bytes read so far: what ``--resume`` compares, as stdin has no size or mtime.

    Args:
        expected: the digest an interrupted run saved for the positions it finished; ``verify()`` compares.
    """

    def __init__(self, expected: str | None = None) -> None:
        self._hash = hashlib.sha256()
        self.expected = expected

    def update(self, data: bytes) -> None:
        self._hash.update(data)

    def hexdigest(self) -> str:
        """The digest to record: the expected one until verified (a refused resume keeps the saved state)."""
        return self.expected if self.expected is not None else self._hash.hexdigest()

    def verify(self) -> None:
        if self.expected is not None and self._hash.hexdigest() != self.expected:
            raise UsageError("cannot resume: stdin differs from what the interrupted run read; "
                             "run without --resume to start over")
        self.expected = None


def iter_items(sources: Sequence[Source], *, text_key: str | Sequence[str] = "text", encoding: str = "utf-8",
               skip: int = 0, stdin_digest: StdinDigest | None = None, max_bytes: int | None = None,
               on_missing: OnMissing = "error") -> Iterator[Item]:
    """Yield one ``Item`` per input position, lazily; the first ``skip`` positions are passed over unread.

    Text files are passed over without being opened; JSONL lines are counted but not parsed. Stdin bytes
    (skipped or not) go into ``stdin_digest``, which is verified when the skipping ends, before any item.
    A whole-text input over ``max_bytes`` is an error item, found from its size before anything is read.
    ``text_key``: one or several field paths (``note.body``) of JSONL records, each a string or a list of strings.
    """
    paths = parse_keys(text_key)
    digest = stdin_digest or StdinDigest()
    if not skip:
        digest.verify()
    for source in sources:
        if source.kind == "text":
            data = None
            if source.path is None:
                data = sys.stdin.buffer.read(-1 if max_bytes is None else max_bytes + 1)
                digest.update(data)
            if skip:
                skip -= 1
                if not skip:
                    digest.verify()
                continue
            yield _read_text(source, encoding, data, max_bytes)
            continue
        handle, error = _open(source)
        if handle is None:
            if skip:
                skip -= 1
                if not skip:
                    digest.verify()
            else:
                yield Item(source, None, error=error)
            continue
        try:
            for number, raw in enumerate(handle, 1):
                if source.path is None:
                    digest.update(raw)
                if skip:
                    skip -= 1
                    if not skip:
                        digest.verify()
                    continue
                yield parse_line_safely(source, number, raw, paths, encoding, on_missing)
        finally:
            if handle is not sys.stdin.buffer:
                handle.close()
    if skip:
        raise UsageError(f"cannot resume: the inputs now have {skip} position(s) fewer than the interrupted run "
                         f"finished; run without --resume to start over")


def input_identity(sources: Sequence[Source]) -> list[list[Any]]:
    """``[name, size, mtime_ns]`` per input file (``None``s when missing; stdin is checked by content).

    A resume compares these, so an input edited, appended to, added or removed since the run is refused.
    """
    out: list[list[Any]] = []
    for source in sources:
        if source.path is None:
            out.append(["-", None, None])
            continue
        try:
            stat = source.path.stat()
            out.append([str(source.path.resolve()), stat.st_size, stat.st_mtime_ns])
        except OSError:
            out.append([str(source.path), None, None])
    return out


def count_positions(sources: Sequence[Source]) -> int | None:
    """How many positions the stream will have, when that is cheap to know (no JSONL or line inputs)."""
    if all(s.kind == "text" for s in sources):
        return len(sources)
    return None


def _open(source: Source) -> tuple[BinaryIO | None, str | None]:
    if source.path is None:
        return sys.stdin.buffer, None
    try:
        return open(source.path, "rb"), None
    except FileNotFoundError:
        return None, f"{source.display}: no such file"
    except IsADirectoryError:
        return None, f"{source.display}: is a folder"
    except OSError as exc:
        return None, f"{source.display}: cannot read ({exc.strerror or type(exc).__name__})"


def valid_unicode(text: str, where: str) -> str:
    """``text`` with lone surrogates (JSON ``"\\ud83d"`` escapes of a cut emoji) read as U+FFFD, one for one.

    spaCy cannot tokenize them (its string store encodes UTF-8), so one such line would stop the whole run;
    the replacement keeps the length, hence every offset into the text.
    """
    if text.isascii():
        return text
    text, count = _LONE_SURROGATE.subn("\ufffd", text)
    if count:
        log.warning("%s: %d lone surrogate(s) (invalid Unicode, e.g. a cut emoji) read as U+FFFD", where, count)
    return text


def _read_text(source: Source, encoding: str, stdin_data: bytes | None = None, max_bytes: int | None = None
               ) -> Item:
    too_big = f"{source.display}: more than {max_bytes} bytes, longer than spaCy's nlp.max_length allows; split it " \
              f"into smaller documents; skipped"
    if stdin_data is not None:
        data = stdin_data
        if max_bytes is not None and len(data) > max_bytes:
            return Item(source, None, error=too_big)
    else:
        try:
            if max_bytes is not None and source.path is not None and source.path.stat().st_size > max_bytes:
                return Item(source, None, error=too_big)
        except OSError:
            pass  # _open reports it
        handle, error = _open(source)
        if handle is None:
            return Item(source, None, error=error)
        if source.path is None:
            data = handle.read()
        else:
            with handle:
                data = handle.read()
    if b"\x00" in data[:BINARY_SNIFF_BYTES] and not encoding.lower().startswith("utf-16"):
        return Item(source, None, error=f"{source.display}: looks like a binary file (contains NUL bytes); skipped")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return Item(source, line, error=f"{source.display}:{line}: not valid {encoding} "
                                        f"(byte offset {exc.start}); pass --encoding if the file uses another one")
    return Item(source, None, text=text)


def parse_line_safely(source: Source, number: int, raw: bytes, paths: Sequence[Sequence[str]], encoding: str,
                      on_missing: OnMissing = "error") -> Item:
    """``_parse_line``, with any failure on one line turned into that line's error item (never a stopped run)."""
    try:
        return _parse_line(source, number, raw, paths, encoding, on_missing)
    except (ValueError, RecursionError, MemoryError) as exc:
        # json.loads: integers over sys.get_int_max_str_digits() digits raise ValueError, deep nesting
        # RecursionError. Their messages may quote the input, so only the kind is shown.
        return Item(source, number, error=f"{source.display}:{number}: {unreadable_json(exc)}; line skipped")


def _parse_line(source: Source, number: int, raw: bytes, paths: Sequence[Sequence[str]], encoding: str,
                on_missing: OnMissing) -> Item:
    where = f"{source.display}:{number}"
    if b"\x00" in raw:
        return Item(source, number, error=f"{where}: contains NUL bytes (binary data?); line skipped")
    try:
        line = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        return Item(source, number, error=f"{where}: not valid {encoding} (byte {exc.start} of the line); "
                                          f"line skipped")
    if source.kind == "lines":
        return Item(source, number, text=line.rstrip("\n").rstrip("\r"))
    if not line.strip():
        return Item(source, number)  # blank line: nothing to do, nothing to report
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        return Item(source, number, error=f"{where}: {json_error(exc)}; line skipped")
    if not isinstance(record, dict):
        return Item(source, number, error=f"{where}: expected a JSON object, got {type(record).__name__}; "
                                          f"line skipped")
    try:
        slots, texts = extract(record, paths, on_missing=on_missing)
    except FieldError as exc:
        # The record's keys are not listed: in some exports the keys themselves are personal data.
        return Item(source, number, error=f"{where}: {exc} (the record has {len(record)} key(s)); use --text-key, "
                                          f"or --on-missing skip to leave such fields as they are; line skipped")
    return Item(source, number, record=record, slots=tuple(slots),
                texts=tuple(valid_unicode(text, where) for text in texts))

