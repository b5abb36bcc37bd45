"""The checks every engine must pass (see test_engines.py).

Each engine gets one real session (module-scoped, parametrised) with the fault hook's folder in its environment,
then calls these: equality with local ``nlp.pipe``, the CLI's byte-identical outputs, and a worker killed
mid-job.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import expected_rows, make_rows
from spacy_privfilter.cli.parser import main
from spacy_privfilter.scale import PipelineSpec, TableJob
from spacy_privfilter.scale.spec import FAULT_DIR_ENV

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pcsv = pytest.importorskip("pyarrow.csv")
ROW = "row_id"


def session(module_name: str, fault_dir: Path, workers: int = 2):
    """Yields a started engine whose worker processes see the fault hook's folder (set before they are spawned,
    removed again afterwards, so that no other test runs with the hook on)."""
    module = pytest.importorskip(f"spacy_privfilter.scale.{module_name}")
    fault_dir.mkdir(parents=True, exist_ok=True)
    os.environ[FAULT_DIR_ENV] = str(fault_dir)
    try:
        engine = module.Engine(workers)
    finally:
        os.environ.pop(FAULT_DIR_ENV, None)
    try:
        yield engine
    finally:
        engine.close()


def job(checkpoint, **options) -> TableJob:
    spec = PipelineSpec({"model": str(checkpoint)}, {}, batch_size=16, threads=1)
    return TableJob(spec, ("subject", "body"), row_id_column=ROW, **options)


def table_of(rows):
    table = pa.Table.from_pylist(rows)
    return table.append_column(ROW, pa.array(range(len(rows)), type=pa.int64()))


def check_equals_local_pipe(engine, checkpoint, nlp, count: int = 200) -> None:
    rows = make_rows(count, seed=1)
    out = engine.scrub(table_of(rows), job(checkpoint, spans_column="spans"))
    assert out.column(ROW).to_pylist() == list(range(count))            # every row once, in order
    got = out.drop([ROW, "spans"]).to_pylist()
    assert got == expected_rows(nlp, rows)
    spans = [json.loads(v) for v in out.column("spans").to_pylist()]
    assert set(spans[0]) == {"subject", "body"} and any(s["body"] for s in spans)


def check_killed_worker(engine, checkpoint, nlp, fault_dir: Path, count: int = 60) -> None:
    rows = make_rows(count, seed=2)
    armed = fault_dir / f"kill-row-{count // 2}"
    armed.touch()
    out = engine.scrub(table_of(rows), job(checkpoint))
    assert not armed.exists() and armed.with_name(armed.name + ".fired").exists()  # a worker really died
    assert out.column(ROW).to_pylist() == list(range(count))
    assert out.drop([ROW]).to_pylist() == expected_rows(nlp, rows)


def write_inputs(folder: Path, count: int = 50) -> Path:
    """JSONL, Parquet and CSV of the same rows; JSONL and Parquet each hold one malformed row (a broken JSON line,
    a null subject) that every engine alike reports and leaves out. (CSV writes the null as an empty string.)"""
    rows = make_rows(count, seed=3)
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in rows]
    lines.insert(7, '{"id": -1, "subject": "broken\n')
    (folder / "a.jsonl").write_text("".join(lines), encoding="utf-8")
    rows[11] = {**rows[11], "subject": None}
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, folder / "b.parquet")
    pcsv.write_csv(table.drop(["note"]), folder / "c.csv")
    return folder


def redact_folder(src: Path, out: Path, checkpoint, engine: str) -> dict[str, bytes]:
    code = main(["redact", str(src), "-o", str(out), "--model", str(checkpoint), "-q", "--engine", engine,
                 "--workers", "2", "--batch-size", "16", "--with-redactions",
                 "--text-key", "subject", "--text-key", "body"])
    assert code == 1  # the malformed rows are reported, the rest is written
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def check_cli_byte_identical(engine_name: str, tmp_path: Path, checkpoint, local_outputs) -> None:
    src, reference = local_outputs
    got = redact_folder(src, tmp_path / engine_name, checkpoint, engine_name)
    assert sorted(got) == ["a.jsonl", "b.parquet", "c.csv"]
    assert got == reference
    assert got["a.jsonl"].count(b"\n") == 50 and pq.read_table(tmp_path / engine_name / "b.parquet").num_rows == 49
