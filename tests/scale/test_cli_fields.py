"""The command line over records with several text fields, CSV and Parquet (local engine, in-process)."""
from __future__ import annotations

import json

import pytest

from conftest import SECRET, expected_rows, make_rows, redacted
from spacy_privfilter.cli.parser import main

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pcsv = pytest.importorskip("pyarrow.csv")


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_repeated_text_key_redacts_every_field(tmp_path, checkpoint, nlp):
    # Regression: a repeated --text-key used to redact only the last key and write the others out unchanged.
    rows = [{"id": i, "subject": f"Re: {SECRET}", "body": f"Dear {SECRET}, call 555-0100."} for i in range(3)]
    src = tmp_path / "mail.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "clean.jsonl"
    assert main(["redact", str(src), "-o", str(out), "--model", str(checkpoint), "-q",
                 "--text-key", "subject", "--text-key", "body"]) == 0
    got = read_jsonl(out)
    assert got == expected_rows(nlp, rows)
    assert all(SECRET not in json.dumps(record) for record in got)


def test_nested_paths_lists_and_redactions(tmp_path, checkpoint, nlp):
    rows = make_rows(12)
    src = tmp_path / "notes.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(["redact", str(src), "-o", str(out), "--model", str(checkpoint), "-q", "--with-redactions",
                 "--text-key", "body", "--text-key", "note.lines"]) == 0
    got = read_jsonl(out)
    bodies = redacted(nlp, [r["body"] for r in rows])
    for row, record, body in zip(rows, got, bodies):
        assert record["body"] == body and record["subject"] == row["subject"] and record["id"] == row["id"]
        assert record["note"]["title"] == row["note"]["title"]
        assert record["note"]["lines"] == redacted(nlp, row["note"]["lines"])
        assert set(record["redactions"]) == {"body", "note.lines"} and len(record["redactions"]["note.lines"]) == 2


def test_missing_field_names_file_line_and_field_never_the_value(tmp_path, checkpoint, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"subject": "ok", "body": "fine"}) + "\n"
                   + json.dumps({"subject": 4711, "body": SECRET}) + "\n"
                   + json.dumps({"body": SECRET}) + "\n")
    out = tmp_path / "out.jsonl"
    args = ["redact", str(src), "-o", str(out), "--model", str(checkpoint), "--text-key", "subject",
            "--text-key", "body"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "in.jsonl:2: key 'subject' is a int, not a string" in err and "in.jsonl:3: key 'subject' is missing" in err
    assert SECRET not in err and "4711" not in err
    assert len(read_jsonl(out)) == 1  # the failed rows are reported, not written

    assert main(args + ["--on-missing", "skip", "-q"]) == 0
    got = read_jsonl(out)
    assert got[1]["subject"] == 4711 and "subject" not in got[2]   # left as they were, as asked
    assert all(SECRET not in r["body"] for r in got)

    assert main(args + ["--on-error", "job"]) == 1
    assert "in.jsonl:2" in capsys.readouterr().err


def test_csv_and_parquet_keep_columns_types_and_order(tmp_path, checkpoint, nlp):
    rows = make_rows(40)
    table = pa.Table.from_pylist(rows)
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(table, src / "t.parquet")
    pcsv.write_csv(table.drop(["note"]), src / "t.csv")
    out = tmp_path / "out"
    assert main(["redact", str(src), "-o", str(out), "--model", str(checkpoint), "-q",
                 "--text-key", "subject", "--text-key", "body"]) == 0
    want = expected_rows(nlp, rows)
    parquet = pq.read_table(out / "t.parquet")
    assert parquet.schema == table.schema
    assert parquet.to_pylist() == want
    csv = pcsv.read_csv(out / "t.csv")
    assert csv.column_names == ["id", "subject", "body", "score"] and csv.schema.field("id").type == pa.int64()
    assert csv.to_pylist() == [{k: v for k, v in r.items() if k != "note"} for r in want]


def test_table_rows_with_unusable_fields_are_named(tmp_path, checkpoint, capsys):
    table = pa.table({"id": [1, 2, 3], "subject": ["a", None, "c"], "body": [SECRET, SECRET, "x"]})
    pq.write_table(table, tmp_path / "t.parquet")
    out = tmp_path / "o.parquet"
    args = ["redact", str(tmp_path / "t.parquet"), "-o", str(out), "--model", str(checkpoint),
            "--text-key", "subject", "--text-key", "body"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "t.parquet: row 2: key 'subject' is null" in err and SECRET not in err
    assert pq.read_table(out).column("id").to_pylist() == [1, 3]
    assert main(args + ["--on-error", "job"]) == 1 and "row 2" in capsys.readouterr().err
    assert main(args + ["--text-key", "absent"]) == 1
    assert "key 'absent' is missing" in capsys.readouterr().err
