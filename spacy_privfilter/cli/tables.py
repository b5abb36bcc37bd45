"""``redact`` over tables and engines: CSV/Parquet files, and JSONL files on Spark, Ray or Dask.

Each file is read here, scrubbed by the engine (the rows spread over its workers, each worker holding one
pipeline), and written back here in the input's row order, atomically. JSONL records are split into their
documents here and put back together here, with the same functions the streaming path uses, so every engine
writes byte-identical files. A row that cannot be scrubbed is reported by file, row and field and left out of
the output (exit code 1), or stops the run with ``--on-error job``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

from .inputs import TABLE_KINDS, TABLE_SUFFIXES, Item, Source, UsageError, iter_items
from .outputs import json_line, write_atomic, encode
from .stream import RunStats
from ..errors import PrivFilterError
from ..scale.core import TableJob
from ..scale.fields import parse_keys, scrubbed_record
from ..scale.spec import PipelineSpec, share_of_cores
from ..scale.tables import read_table, write_table

log = logging.getLogger("spacy_privfilter.cli")
ROW_ID, TEXTS, REDACTIONS, ERROR = "__spacy_privfilter_row", "__texts", "__redactions", "__error"
SEED_ENV = "_SPACY_PRIVFILTER_SEED"  # the surrogate seed reaches the workers this way, never inside the job


class RowError(PrivFilterError):
    """A row could not be scrubbed and ``--on-error job`` was given."""


def engine_spec(args: argparse.Namespace, filter_config: dict[str, Any], redactor_config: dict[str, Any]) -> PipelineSpec:
    """The pipeline the workers build: the command line's options, the seed moved into the environment."""
    redactor_config = dict(redactor_config)
    seed = redactor_config.pop("seed", None)
    if seed is not None:
        os.environ[SEED_ENV] = str(seed)  # inherited by the engine's worker processes started after this
    workers = args.workers if args.engine != "local" else 1
    return PipelineSpec(filter_config, redactor_config, lang=args.lang, batch_size=args.batch_size,
                        threads=share_of_cores(workers), seed_env=SEED_ENV if seed is not None else None)


def run_tables(args: argparse.Namespace, sources: Sequence[Source], target: Path | None, as_dir: bool,
               engine: Any, spec: PipelineSpec, stats: RunStats) -> None:
    """Scrub each source on ``engine`` and write its output file; counts go to ``stats``."""
    if target is None:
        raise UsageError("tables and --engine runs need -o (a file, or a folder for several inputs)")
    for source in sources:
        dest = target / source.dest if as_dir else target
        if source.kind in TABLE_KINDS:
            _run_table(args, source, dest, engine, spec, stats)
        else:
            _run_jsonl(args, source, dest, engine, spec, stats)


def _job(args: argparse.Namespace, spec: PipelineSpec, text_keys: Sequence[str]) -> TableJob:
    return TableJob(spec, tuple(text_keys), on_missing=args.on_missing, on_error="row", redactions_column=REDACTIONS,
                    error_column=ERROR, row_id_column=ROW_ID)


def _run_table(args: argparse.Namespace, source: Source, dest: Path, engine: Any, spec: PipelineSpec,
               stats: RunStats) -> None:
    import pyarrow as pa

    assert source.path is not None
    try:
        table = read_table(source.path, source.kind, args.text_key)
    except (OSError, pa.ArrowException) as exc:
        _fail(stats, f"{source.display}: cannot read as {source.kind} ({type(exc).__name__})")
        return
    schema = table.schema
    table = table.append_column(ROW_ID, pa.array(range(1, table.num_rows + 1), type=pa.int64()))
    out = _scrub(engine, table, _job(args, spec, args.text_key))
    errors = out.column(ERROR).to_pylist()
    for message in filter(None, errors):
        _row_failed(args, stats, f"{source.display}: {message}")
    keep = pa.array([message is None for message in errors])
    redactions = [json.loads(v) for v, ok in zip(out.column(REDACTIONS).to_pylist(), errors) if ok is None]
    out = out.filter(keep)
    if args.with_redactions:
        schema = schema.append(pa.field("redactions", pa.string()))
        out = out.append_column("redactions", out.column(REDACTIONS))
    out = out.select(schema.names).cast(schema)
    kind = TABLE_SUFFIXES.get(dest.suffix.lower(), source.kind)
    write_table(out, dest, kind)
    stats.docs += out.num_rows
    stats.positions += table.num_rows
    stats.spans += sum(_count(r) for r in redactions)


def _run_jsonl(args: argparse.Namespace, source: Source, dest: Path, engine: Any, spec: PipelineSpec,
               stats: RunStats) -> None:
    import pyarrow as pa

    items: list[Item] = list(iter_items([source], text_key=args.text_key, encoding=args.encoding,
                                        on_missing=args.on_missing))
    if args.on_error == "job":
        for item in items:
            if item.error is not None:
                _row_failed(args, stats, item.error)
    good = [i for i, item in enumerate(items) if item.error is None and item.record is not None]
    table = pa.table({ROW_ID: pa.array(good, type=pa.int64()),
                      TEXTS: pa.array([list(items[i].documents) for i in good], type=pa.list_(pa.string()))})
    out = _scrub(engine, table, _job(args, spec, [TEXTS]))
    results = dict(zip(out.column(ROW_ID).to_pylist(), zip(out.column(TEXTS).to_pylist(),
                                                           out.column(REDACTIONS).to_pylist())))
    paths = parse_keys(args.text_key)
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


def _scrub(engine: Any, table: Any, job: TableJob) -> Any:
    """The engine's result, or for an empty table the same columns with no rows (no workers started for it)."""
    import pyarrow as pa

    if table.num_rows:
        return engine.scrub(table, job)
    for name in (job.redactions_column, job.error_column):
        table = table.append_column(name, pa.array([], type=pa.string()))
    return table


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
