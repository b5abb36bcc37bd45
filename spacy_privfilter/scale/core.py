"""The engine-neutral core: one batch of rows (a pyarrow Table or pandas DataFrame) in, the same rows scrubbed out.

Every engine adapter calls ``scrub_table`` on its workers; the local engine calls it in-process. The text fields
are taken from the rows with ``fields.extract``, all of a batch's documents go through one ``nlp.pipe``, and the
redacted texts are put back with ``fields.replace``, so each column keeps its type and every other column is left
untouched. Rows stay in their order; nothing is dropped.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from .fields import FieldError, OnError, OnMissing, by_key, extract, parse_keys, replace
from .spec import PipelineSpec, maybe_fail, worker_nlp

PYARROW_HINT = 'pip install pyarrow  (or the scale extra from a clone: pip install ".[scale]")'


def require_pyarrow() -> Any:
    try:
        import pyarrow
    except ImportError as exc:
        raise ImportError(f"tables need pyarrow; {PYARROW_HINT}") from exc
    return pyarrow


@dataclass(frozen=True)
class TableJob:
    """What to scrub in each batch, and with which pipeline (picklable; shipped to every worker).

    Args:
        pipeline: the pipeline description.
        text_keys: the text fields: column names, dotted paths into struct columns (``note.body``); a field holds a
            string or a list of strings.
        on_missing: a field that is missing, null or not text: ``error`` (the row fails) or ``skip`` (left as it is).
        on_error: a failing row: ``job`` raises (the whole job fails, naming row and field); ``row`` nulls that
            row's text columns and puts the reason in ``error_column``.
        spans_column: if set, a string column of JSON spans ``{start, end, label, score}`` per field.
        redactions_column: if set (redacting pipelines only), a string column of JSON redaction records per field.
        error_column: the column that names a failed row's problem (``on_error="row"``); null for good rows.
        row_id_column: a column whose values name rows in errors (default: the row's 1-based position in the batch).
    """

    pipeline: PipelineSpec
    text_keys: tuple[str, ...]
    on_missing: OnMissing = "error"
    on_error: OnError = "job"
    spans_column: str | None = None
    redactions_column: str | None = None
    error_column: str = "scrub_error"
    row_id_column: str | None = None

    def __post_init__(self) -> None:
        keys = (self.text_keys,) if isinstance(self.text_keys, str) else tuple(self.text_keys)
        object.__setattr__(self, "text_keys", keys)  # a list or one name is accepted too
        parse_keys(keys)
        if self.redactions_column and not self.pipeline.redact:
            raise ValueError("redactions_column needs a redacting pipeline (redactor_config is None)")


def doc_spans(doc: Any, spans_key: str, *, with_sources: bool = False) -> list[dict[str, Any]]:
    """The spans the pipeline put in ``doc.spans[spans_key]`` as ``{start, end, label, score}`` dicts.

    Offsets are the character offsets of the token-aligned spaCy spans (what the Python API exposes and
    what the redactor hides), see ``--alignment-mode``. ``with_sources`` adds each span's ``source``
    (``model``, ``pattern:<id>``, ``deny``, ``external``).
    """
    from ..pipeline.span_groups import span_scores, span_sources

    if spans_key not in doc.spans:
        return []
    group = doc.spans[spans_key]
    spans = [{"start": span.start_char, "end": span.end_char, "label": span.label_,
              "score": None if score is None else round(score, 6)}
             for span, score in zip(group, span_scores(group, fill=None))]
    if with_sources:
        for span, source in zip(spans, span_sources(group)):
            span["source"] = source
    return spans


def spans_key_of(nlp: Any) -> str:
    return str(nlp.get_pipe_config("privacy_filter").get("spans_key") or "pii")


def scrub_table(table: Any, job: TableJob, *, nlp: Any = None) -> Any:
    """Scrub one batch. ``table``: a ``pyarrow.Table`` (or ``RecordBatch``) or a pandas DataFrame; returns the
    same kind with the same columns (text columns scrubbed), plus the optional spans/redactions/error columns.

    ``nlp``: a pipeline to use instead of this process's cached one (``worker_nlp(job.pipeline)``).
    """
    pa = require_pyarrow()
    if not isinstance(table, (pa.Table, pa.RecordBatch)):  # pandas
        import pandas as pd

        out = scrub_table(pa.Table.from_pandas(table, preserve_index=False), job, nlp=nlp)
        arrow_typed = any(isinstance(dtype, pd.ArrowDtype) for dtype in table.dtypes)
        return out.to_pandas(types_mapper=pd.ArrowDtype if arrow_typed else None)
    batch_kind = type(table)
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    paths = parse_keys(job.text_keys)
    roots = [name for name in dict.fromkeys(path[0] for path in paths) if name in table.column_names]
    columns = {name: table.column(name).to_pylist() for name in roots}
    row_ids = (table.column(job.row_id_column).to_pylist() if job.row_id_column
               else list(range(1, table.num_rows + 1)))
    maybe_fail(row_ids)
    rows, errors = _extract_rows(columns, paths, row_ids, job)
    nlp = nlp if nlp is not None else worker_nlp(job.pipeline)
    texts = [text for _, _, row_texts in rows for text in row_texts]
    docs = iter(nlp.pipe(texts, batch_size=job.pipeline.batch_size)) if texts else iter(())
    key = spans_key_of(nlp)
    spans_out: list[str | None] = [None] * table.num_rows
    redactions_out: list[str | None] = [None] * table.num_rows
    for row, slots, row_texts in rows:
        row_docs = [next(docs) for _ in row_texts]
        record = {name: columns[name][row] for name in roots}
        if job.pipeline.redact:
            record = replace(record, slots, [doc._.redacted_text for doc in row_docs])
        for name in roots:
            columns[name][row] = record[name]
        if job.spans_column:
            spans_out[row] = _json(by_key(paths, slots, [doc_spans(doc, key) for doc in row_docs]))
        if job.redactions_column:
            redactions_out[row] = _json(by_key(paths, slots, [[dict(r) for r in doc._.redactions or []]
                                                              for doc in row_docs]))
    for row in errors:
        for name in roots:
            columns[name][row] = None  # fail closed: a row that could not be scrubbed keeps no text
    for name in roots:
        index = table.column_names.index(name)
        table = table.set_column(index, name, pa.array(columns[name], type=table.schema.field(name).type))
    extra = [(job.spans_column, spans_out), (job.redactions_column, redactions_out)]
    if job.on_error == "row":
        extra.append((job.error_column, [errors.get(row) for row in range(table.num_rows)]))
    for name, values in extra:
        if name:
            table = table.append_column(name, pa.array(values, type=pa.string()))
    if batch_kind is pa.RecordBatch:
        return pa.RecordBatch.from_pydict({n: table.column(n).combine_chunks() for n in table.column_names},
                                          schema=table.schema)
    return table


def scrub_records(records: Iterable[Any], nlp: Any, *, text_keys: str | Sequence[str] = "text",
                  on_missing: OnMissing = "error", batch_size: int = 32) -> list[Any]:
    """Redacted copies of JSON-like ``records`` (dicts), in order: every text field (``text_keys``: names, dotted
    paths, fields holding a string or a list of strings) replaced by its redacted text. ``nlp`` must end with
    ``privacy_redactor``. A missing, null or non-text field raises ``FieldError`` naming the record's position and
    the field, unless ``on_missing="skip"`` (then it is left as it is).
    """
    paths = parse_keys(text_keys)
    records = list(records)
    split = []
    for number, record in enumerate(records, 1):
        try:
            split.append(extract(record, paths, on_missing=on_missing))
        except FieldError as exc:
            raise FieldError(f"record {number}: {exc}") from None
    docs = iter(nlp.pipe([text for _, texts in split for text in texts], batch_size=batch_size))
    return [replace(record, slots, [next(docs)._.redacted_text for _ in texts])
            for record, (slots, texts) in zip(records, split)]


def in_row_order(table: Any, job: TableJob) -> Any:
    """``table`` sorted back into the input's order by ``job.row_id_column`` (engines may return batches in any
    order); unchanged without a row id column."""
    return table.sort_by(job.row_id_column) if job.row_id_column else table


def partitions(rows: int, workers: int, per_worker: int = 4) -> list[tuple[int, int]]:
    """``(start, length)`` slices splitting ``rows`` into about ``per_worker`` parts per worker (for balance: a
    slow or restarted worker then holds up only a small part)."""
    size = max(1, -(-rows // (workers * per_worker)))
    return [(start, min(size, rows - start)) for start in range(0, rows, size)]


def _extract_rows(columns: dict[str, list[Any]], paths: Sequence[Sequence[str]], row_ids: list[Any],
                  job: TableJob) -> tuple[list[tuple[int, list[Any], list[str]]], dict[int, str]]:
    """``(row, slots, texts)`` for each row that can be scrubbed, and ``{row: reason}`` for those that cannot."""
    rows: list[tuple[int, list[Any], list[str]]] = []
    errors: dict[int, str] = {}
    count = len(row_ids)
    for row in range(count):
        record = {name: values[row] for name, values in columns.items()}
        try:
            slots, texts = extract(record, paths, on_missing=job.on_missing)
        except FieldError as exc:
            reason = f"row {row_ids[row]}: {exc}"
            if job.on_error == "job":
                raise FieldError(f"{reason}; pass on_missing='skip' to leave such fields as they are") from None
            errors[row] = reason
            continue
        rows.append((row, slots, texts))
    return rows, errors


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
