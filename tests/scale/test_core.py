"""The engine-neutral core: one batch in, the same rows scrubbed out, equal to local nlp.pipe."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys

import pytest

from conftest import SECRET, expected_rows, make_rows, redacted
from spacy_privfilter.scale import FieldError, PipelineSpec, TableJob, scrub_records, scrub_table
from spacy_privfilter.scale.core import partitions
from spacy_privfilter.scale.spec import share_of_cores, worker_nlp

pa = pytest.importorskip("pyarrow")


@pytest.fixture(scope="module")
def spec(checkpoint):
    return PipelineSpec({"model": str(checkpoint)}, {}, batch_size=8)


def test_table_batch_equals_local_pipe_and_keeps_other_columns(spec, nlp):
    rows = make_rows(30)
    table = pa.Table.from_pylist(rows)
    out = scrub_table(table, TableJob(spec, ("subject", "body", "note.lines"), spans_column="spans"))
    assert out.schema.remove(out.schema.get_field_index("spans")) == table.schema
    want = expected_rows(nlp, rows)
    for got, row, original in zip(out.to_pylist(), want, rows):
        assert got["note"]["lines"] == redacted(nlp, original["note"]["lines"])
        assert got["note"]["title"] == original["note"]["title"]
        assert {k: got[k] for k in ("id", "subject", "body", "score")} == {k: row[k] for k in ("id", "subject", "body",
                                                                                                "score")}
        spans = json.loads(got["spans"])
        assert set(spans) == {"subject", "body", "note.lines"} and len(spans["note.lines"]) == 2


def test_pandas_and_record_batches_come_back_as_they_went_in(spec, nlp):
    rows = make_rows(6)
    table = pa.Table.from_pylist(rows).drop(["note"])
    job = TableJob(spec, ("body",))
    frame = scrub_table(table.to_pandas(), job)
    assert list(frame.columns) == ["id", "subject", "body", "score"]
    assert frame["body"].tolist() == redacted(nlp, [r["body"] for r in rows])
    batch = scrub_table(table.to_batches()[0], job)
    assert isinstance(batch, pa.RecordBatch) and batch.column(2).to_pylist() == frame["body"].tolist()


def test_failing_rows_raise_or_are_marked_and_hold_no_text(spec):
    table = pa.table({"subject": ["ok", None, "fine"], "body": [SECRET, SECRET, SECRET]})
    with pytest.raises(FieldError) as info:
        scrub_table(table, TableJob(spec, ("subject", "body")))
    assert "row 2" in str(info.value) and "'subject' is null" in str(info.value) and SECRET not in str(info.value)
    out = scrub_table(table, TableJob(spec, ("subject", "body"), on_error="row", error_column="err"))
    assert out.column("err").to_pylist()[0] is None and "'subject' is null" in out.column("err").to_pylist()[1]
    assert out.column("body").to_pylist()[1] is None and out.column("subject").to_pylist()[1] is None
    skipped = scrub_table(table, TableJob(spec, ("subject", "body"), on_missing="skip"))
    assert skipped.column("subject").to_pylist()[1] is None and SECRET not in skipped.column("body").to_pylist()[1]


def test_scrub_records_is_the_same_for_python_objects(nlp):
    rows = make_rows(5)
    assert scrub_records(rows, nlp, text_keys=["subject", "body"]) == expected_rows(nlp, rows)
    with pytest.raises(FieldError, match="record 2"):
        scrub_records([{"text": "a"}, {"text": None}], nlp)


def test_spec_is_small_picklable_and_refuses_secrets(spec, checkpoint):
    data = pickle.dumps(TableJob(spec, ("body",)))
    assert len(data) < 2000 and pickle.loads(data).pipeline == spec
    for secret in ({"hash_key": "k"}, {"seed": 7}):
        with pytest.raises(ValueError, match="environment variable"):
            PipelineSpec({"model": str(checkpoint)}, secret)
    with pytest.raises(ValueError):
        PipelineSpec({})


def test_one_pipeline_per_process(spec):
    assert worker_nlp(spec) is worker_nlp(spec)


def test_seed_is_read_from_the_worker_environment(checkpoint, monkeypatch):
    seeded = PipelineSpec({"model": str(checkpoint)}, {"style": "surrogate"}, seed_env="TEST_PRIVFILTER_SEED")
    with pytest.raises(ValueError, match="TEST_PRIVFILTER_SEED"):
        seeded.build()
    monkeypatch.setenv("TEST_PRIVFILTER_SEED", "zq-seed-4711")
    nlp = seeded.build()
    assert nlp.get_pipe("privacy_redactor").config.seed == "zq-seed-4711"  # read from the environment
    assert nlp.get_pipe_config("privacy_redactor")["seed"] is None  # a secret never enters the config
    assert "zq-seed" not in seeded.key() and "zq-seed" not in repr(pickle.dumps(seeded))


def test_partitions_and_thread_shares():
    assert partitions(10, 2, per_worker=2) == [(0, 3), (3, 3), (6, 3), (9, 1)]
    assert sum(n for _, n in partitions(1001, 3)) == 1001
    assert share_of_cores(2, cores=16) == 8 and share_of_cores(4, cores=2) == 1


def test_engines_missing_name_the_install(monkeypatch):
    code = ("import sys\nfor m in ('ray', 'dask', 'distributed', 'pyspark'): sys.modules[m] = None\n"
            "from spacy_privfilter.scale import start_engine\n"
            "for name in ('ray', 'dask', 'spark'):\n"
            "    try:\n        start_engine(name, 1)\n"
            "    except ImportError as exc:\n        print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert out.count('pip install ".[scale]"') == 3, out
    for install in ('pip install "ray[data]"', 'pip install "dask[distributed]"', "pip install pyspark"):
        assert install in out, out


def test_importing_scale_imports_no_framework():
    code = ("import sys, spacy_privfilter.scale, spacy_privfilter.cli.scrub\n"
            "print(sorted(m for m in ('torch', 'pyarrow', 'pandas', 'ray', 'dask', 'pyspark', 'spacy') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr
