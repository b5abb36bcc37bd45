"""Command-line output: stdout, one file or a mirrored folder, written so that nothing finished is lost.

Whole documents (text files) are written to a temporary file and renamed into place, so an output file
either is complete or does not exist. Line outputs (JSONL, one document per line) are appended and flushed
after every batch; a small progress file, replaced atomically after each flush, records how many input
positions are done and how many bytes each line output held at that moment. ``--resume`` truncates the line
outputs back to those sizes (dropping a half-written batch) and skips the positions already done.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import IO, Any, Mapping

from .inputs import Item, UsageError

PROGRESS_VERSION = 1
DIR_PROGRESS_NAME = ".spacy-privfilter-progress.json"


def progress_path(target: Path, as_dir: bool) -> Path:
    """Where the progress file of an output lives: inside an output folder, or next to an output file."""
    return target / DIR_PROGRESS_NAME if as_dir else target.with_name(target.name + ".progress.json")


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())  # the data is on disk before the name points at it (no empty file after a crash)
    os.replace(tmp, path)
    fsync_folder(path.parent)


def fsync_folder(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def encode(text: str) -> bytes:
    # Lone surrogates (possible from JSON "\ud800" escapes) become \\udXXX escapes instead of crashing.
    return text.encode("utf-8", errors="backslashreplace")


def json_line(record: Mapping[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"


class Outputs:
    """Routes results to stdout, to one file, or into a folder that mirrors the input tree.

    Args:
        target: output file or folder; None writes to stdout.
        as_dir: ``target`` is a folder; each source writes to ``target / source.dest``.
        sizes: line-output sizes recorded by an interrupted run (``--resume``); those files are truncated to
            these sizes and appended to. Any other line output is started afresh.
    """

    def __init__(self, target: Path | None, *, as_dir: bool = False, sizes: Mapping[str, int] | None = None) -> None:
        self.target = target
        self.as_dir = as_dir
        self.sizes: dict[str, int] = dict(sizes or {})
        self._key: str | None = None
        self._stream: IO[bytes] | None = None

    def _path(self, item: Item) -> Path:
        assert self.target is not None
        return self.target / item.source.dest if self.as_dir else self.target

    def _key_of(self, item: Item) -> str:
        return item.source.dest if self.as_dir else "."

    def write_document(self, item: Item, text: str) -> None:
        """A whole-document result (text file input): complete file or nothing."""
        if self.target is None:
            sys.stdout.buffer.write(encode(text))
            return
        write_atomic(self._path(item), encode(text))

    def write_line(self, item: Item, line: str) -> None:
        """One line of a line output (JSONL record or one document per line); ``line`` ends with a newline."""
        data = encode(line)
        if self.target is None:
            sys.stdout.buffer.write(data)
            return
        key = self._key_of(item)
        if key != self._key:
            self._open(key, self._path(item))
        assert self._stream is not None
        self._stream.write(data)
        self.sizes[key] += len(data)

    def _open(self, key: str, path: Path) -> None:
        self.close()
        path.parent.mkdir(parents=True, exist_ok=True)
        if key in self.sizes:
            # Resuming: drop whatever an interrupted batch wrote after the last recorded flush.
            size = path.stat().st_size if path.exists() else -1
            if size < self.sizes[key]:
                raise UsageError(f"cannot resume: {path} is {'missing' if size < 0 else 'shorter than recorded'} "
                                 f"({max(size, 0)} of {self.sizes[key]} bytes); run without --resume to start over")
            with open(path, "r+b") as handle:
                handle.truncate(self.sizes[key])
            self._stream = open(path, "ab")
        else:
            self._stream = open(path, "wb")
            self.sizes[key] = 0
        self._key = key

    def flush(self) -> None:
        if self.target is None:
            sys.stdout.flush()
            sys.stdout.buffer.flush()
        elif self._stream is not None:
            self._stream.flush()
            # On disk before the progress file that records these sizes is saved.
            os.fsync(self._stream.fileno())

    def finish_empty(self, sources: Any) -> None:
        """Write an empty output for each line source that gave no record, so no stale file from an earlier
        run stays behind looking like this run's result."""
        if self.target is None:
            return
        for source in sources:
            key = source.dest if self.as_dir else "."
            if source.kind != "text" and key not in self.sizes:
                path = self.target / source.dest if self.as_dir else self.target
                write_atomic(path, b"")
                self.sizes[key] = 0

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
        self._stream, self._key = None, None


class Progress:
    """The progress file of one run: input positions done and line-output sizes, replaced atomically.

    Args:
        path: the progress file (see ``progress_path``); None when writing to stdout (nothing to resume).
        fingerprint: what identifies the run (command and inputs); a resume with other inputs is refused.
    """

    def __init__(self, path: Path | None, fingerprint: Mapping[str, Any], identity: Any = None,
                 stdin_digest: Any = None) -> None:
        self.path = path
        self.fingerprint = dict(fingerprint)
        self.identity = identity  # [name, size, mtime_ns] per input (see inputs.input_identity)
        self.stdin_digest = stdin_digest  # inputs.StdinDigest: sha256 of the stdin read so far

    def load(self) -> dict[str, Any] | None:
        """The saved state, checked against this run; None when there is no progress file."""
        if self.path is None or not self.path.exists():
            return None
        try:
            state = json.loads(self.path.read_text(encoding="utf-8"))
            done, sizes = int(state["done"]), {str(k): int(v) for k, v in dict(state["sizes"]).items()}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"progress file {self.path} is unreadable ({type(exc).__name__}); "
                             f"delete it and run without --resume") from exc
        if state.get("fingerprint") != self.fingerprint:
            raise UsageError(f"progress file {self.path} belongs to a run with other inputs or options; "
                             f"run without --resume to start over")
        if self.identity is not None and state.get("identity") != self.identity:
            raise UsageError(f"cannot resume: {changed_input(state.get('identity'), self.identity)} changed since "
                             f"the interrupted run (progress file {self.path}); run without --resume to start over")
        return {"done": done, "sizes": sizes, "stdin_sha256": state.get("stdin_sha256")}

    def save(self, done: int, sizes: Mapping[str, int]) -> None:
        if self.path is None:
            return
        state = {"version": PROGRESS_VERSION, "fingerprint": self.fingerprint, "done": done, "sizes": dict(sizes),
                 "identity": self.identity,
                 "stdin_sha256": self.stdin_digest.hexdigest() if self.stdin_digest is not None else None}
        write_atomic(self.path, json.dumps(state).encode("utf-8"))

    def remove(self) -> None:
        if self.path is not None and self.path.exists():
            self.path.unlink()


def changed_input(saved: Any, current: Any) -> str:
    """Names the first input that differs between two ``input_identity`` lists (for the refusal message)."""
    saved = saved if isinstance(saved, list) else []
    for old, new in zip(saved, current):
        if old != new:
            return f"input {new[0]}"
    if len(saved) != len(current):
        return f"the set of inputs ({len(saved)} file(s) then, {len(current)} now)"
    return "an input"
