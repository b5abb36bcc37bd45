"""``redact`` over tables and engines: CSV/Parquet files, and JSONL files on Spark, Ray or Dask.

Files are read here; only their text columns (with a row id) go to the engine, many files in one job so that
the workers load the model once, not once per file; the scrubbed rows come back in order and each file is
written here, atomically. JSONL records are split into their documents and put back together with the same
functions the streaming path uses, so every engine writes byte-identical files. A row that cannot be scrubbed
is reported by file, row and field and left out of the output (exit code 1), or stops the run (``--on-error
job``).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .inputs import TABLE_KINDS, TABLE_SUFFIXES, Source, UsageError, iter_items
from .outputs import encode, json_line, write_atomic
from .stream import RunStats
from ..errors import PrivFilterError
from ..scale.core import TableJob
from ..scale.fields import parse_keys, scrubbed_record
from ..scale.spec import PipelineSpec, share_of_cores
from ..scale.tables import read_table, write_table

log = logging.getLogger("spacy_privfilter.cli")
ROW_ID, TEXTS, REDACTIONS, ERROR = "__spacy_privfilter_row", "__texts", "__redactions", "__error"
SEED_ENV = "_SPACY_PRIVFILTER_SEED"  # the surrogate seed reaches the workers this way, never inside the job
JOB_ROWS = 200_000  # files are gathered into one engine job up to about this many rows (bounds driver memory)


class RowError(PrivFilterError):
    """A row could not be scrubbed and ``--on-error job`` was given."""


@dataclass
class Pending:
    """One file read and waiting for its scrubbed rows: ``rows`` (row id + text columns) go to the engine,
    ``finish(scrubbed_rows)`` writes the output file."""

    rows: Any
    text_keys: tuple[str, ...]
    finish: Callable[[Any], None]


def engine_spec(args: argparse.Namespace, filter_config: dict[str, Any],
                redactor_config: dict[str, Any]) -> PipelineSpec:
    """The pipeline the workers build: the command line's options, the seed moved into the environment."""
    seed = getattr(args, "seed", None)
    if seed is not None:
        os.environ[SEED_ENV] = str(seed)  # inherited by the engine's worker processes started after this
    workers = args.workers if args.engine != "local" else 1
    return PipelineSpec(filter_config, dict(redactor_config), lang=args.lang, batch_size=args.batch_size,
                        threads=share_of_cores(workers), seed_env=SEED_ENV if seed is not None else None)


def run_tables(args: argparse.Namespace, sources: Sequence[Source], target: Path | None, as_dir: bool,
               engine: Any, spec: PipelineSpec, stats: RunStats) -> None:
    """Scrub every source on ``engine`` and write its output file; counts go to ``stats``."""
    if target is None:
        raise UsageError("tables and --engine runs need -o (a file, or a folder for several inputs)")
    pending: list[Pending] = []
    for source in sources:
        dest = target / source.dest if as_dir else target
        reader = _read_table if source.kind in TABLE_KINDS else _read_jsonl
        item = reader(args, source, dest, stats)
        if item is not None:
            pending.append(item)
        if sum(p.rows.num_rows for p in pending) >= JOB_ROWS:
            _scrub_all(args, engine, spec, pending)
            pending = []
    _scrub_all(args, engine, spec, pending)


def _scrub_all(args: argparse.Namespace, engine: Any, spec: PipelineSpec, pending: list[Pending]) -> None:
    """One engine job per column layout: the files' rows concatenated under one row id, then split back."""
    import pyarrow as pa

    groups: dict[tuple[Any, tuple[str, ...]], list[Pending]] = {}
    for item in pending:
        groups.setdefault((item.rows.schema, item.text_keys), []).append(item)
    for (schema, text_keys), items in groups.items():
        offsets, start = [], 0
        for item in items:
            offsets.append(start)
            start += item.rows.num_rows
        rows = pa.concat_tables(item.rows for item in items)
        rows = rows.set_column(0, ROW_ID, pa.array(range(rows.num_rows), type=pa.int64()))
        job = TableJob(spec, text_keys, on_missing=args.on_missing, on_error="row", redactions_column=REDACTIONS,
                       error_column=ERROR, row_id_column=ROW_ID)
        out = engine.scrub(rows, job) if rows.num_rows else _empty_result(rows, job)
        for item, offset in zip(items, offsets):
            item.finish(out.slice(offset, item.rows.num_rows))


def _empty_result(rows: Any, job: TableJob) -> Any:
    import pyarrow as pa

    for name in (job.redactions_column, job.error_column):
        rows = rows.append_column(name, pa.array([], type=pa.string()))
    return rows


def _read_table(args: argparse.Namespace, source: Source, dest: Path, stats: RunStats) -> Pending | None:
    import pyarrow as pa

    assert source.path is not None
    try:
        table = read_table(source.path, source.kind, args.text_key)
    except (OSError, pa.ArrowException) as exc:
        _fail(stats, f"{source.display}: cannot read as {source.kind} ({type(exc).__name__})")
        return None
    roots = [name for name in dict.fromkeys(path[0] for path in parse_keys(args.text_key))
             if name in table.column_names]
    rows = table.select(roots).add_column(0, ROW_ID, pa.array(range(table.num_rows), type=pa.int64()))

    def finish(out: Any) -> None:
        errors = out.column(ERROR).to_pylist()
        for row, message in enumerate(errors, 1):
            if message is not None:
                _row_failed(args, stats, f"{source.display}: row {row}: {message.partition(': ')[2]}")
        keep = pa.array([message is None for message in errors])
        result = table
        for name in roots:
            result = result.set_column(result.column_names.index(name), name, out.column(name))
        if args.with_redactions:
            result = result.append_column("redactions", out.column(REDACTIONS))
        result = result.filter(keep)
        write_table(result, dest, TABLE_SUFFIXES.get(dest.suffix.lower(), source.kind))
        stats.docs += result.num_rows
        stats.positions += table.num_rows
        stats.spans += sum(_count(json.loads(v)) for v in out.column(REDACTIONS).to_pylist() if v is not None)

    return Pending(rows, tuple(args.text_key), finish)


def _read_jsonl(args: argparse.Namespace, source: Source, dest: Path, stats: RunStats) -> Pending:
    import pyarrow as pa

    items = list(iter_items([source], text_key=args.text_key, encoding=args.encoding, on_missing=args.on_missing))
    if args.on_error == "job":
        for item in items:
            if item.error is not None:
                _row_failed(args, stats, item.error)
    good = [i for i, item in enumerate(items) if item.error is None and item.record is not None]
    rows = pa.table({ROW_ID: pa.array(good, type=pa.int64()),
                     TEXTS: pa.array([list(items[i].documents) for i in good], type=pa.list_(pa.string()))})
    paths = parse_keys(args.text_key)

    def finish(out: Any) -> None:
        results = dict(zip(good, zip(out.column(TEXTS).to_pylist(), out.column(REDACTIONS).to_pylist())))
        lines: list[str] = []
        for position, item in enumerate(items):
            if item.error is not None:
                _row_failed(args, stats, item.error)
            elif item.record is not None:
                redacted, redactions_json = results[position]
                redactions = json.loads(redactions_json)
                lines.append(json_line(scrubbed_record(item.record, paths, item.slots, redacted,
                                                       redactions if args.with_redactions else None)))
                stats.docs += 1
                stats.spans += _count(redactions)
        write_atomic(dest, encode("".join(lines)))
        stats.positions += len(items)

    return Pending(rows, (TEXTS,), finish)


def _count(redactions: Any) -> int:
    """Redaction records in a ``by_key``-shaped value (lists, lists of lists, or a dict of those)."""
    if isinstance(redactions, dict):
        return sum(_count(v) for v in redactions.values())
    if isinstance(redactions, list):
        return sum(_count(v) if isinstance(v, list) else 1 for v in redactions)
    return 0


def _row_failed(args: argparse.Namespace, stats: RunStats, message: str) -> None:
    if args.on_error == "job":
        raise RowError(f"{message}; stopped (--on-error job)")
    _fail(stats, message)


def _fail(stats: RunStats, message: str) -> None:
    stats.errors += 1
    stats.error_messages.append(message)
    log.error("%s", message)
