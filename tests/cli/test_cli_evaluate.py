"""``evaluate`` through the real command line on the shared data, with precomputed predictions (no model).

The expected figures of the corrupted predictions follow from how they were corrupted (see
``test_evaluate.corrupt``), not from the scoring code.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from test_evaluate import corrupt


def _records(path):
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _write_predictions(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def _evaluate(*args):
    return subprocess.run([sys.executable, "-m", "spacy_privfilter", "evaluate", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_oracle_predictions_report_one(tmp_path, shared_data_files):
    rows = [{"id": r.get("id"), "spans": r["spans"]} for path in shared_data_files for r in _records(path)]
    preds = tmp_path / "oracle.jsonl"
    _write_predictions(preds, rows)
    done = _evaluate(*shared_data_files, "--predictions", preds)
    assert done.returncode == 0, done.stderr
    overall = next(line for line in done.stdout.splitlines() if line.startswith("overall"))
    assert [float(x) for x in overall.split()[1:7]] == [1.0] * 6
    n_gold = sum(len(row["spans"]) for row in rows)
    assert overall.split()[7:9] == [str(n_gold), str(n_gold)]
    assert re.search(r"^leakage: 0\.0000 \(0 of \d+ gold", done.stdout, re.M)


def test_corrupted_predictions_report_the_constructed_figures(tmp_path, shared_data_files):
    records = [r for path in shared_data_files for r in _records(path)]
    spans, book, per_label_hits, leaked = corrupt(records)
    preds = tmp_path / "corrupted.jsonl"
    _write_predictions(preds, [{"id": r.get("id"), "spans": s} for r, s in zip(records, spans)])
    done = _evaluate(*shared_data_files, "--predictions", preds, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    hits = book["gold"] - book["dropped"] - book["shifted"] - book["relabelled"]
    n_pred = book["gold"] - book["dropped"]
    exact = report["exact"]["overall"]
    assert exact["precision"] == pytest.approx(hits / n_pred)
    assert exact["recall"] == pytest.approx(hits / book["gold"])
    assert exact["f1"] == pytest.approx(2 * hits / (n_pred + book["gold"]))
    overlap = report["overlap"]["overall"]
    assert overlap["recall"] == pytest.approx((hits + book["shifted"]) / book["gold"])
    for label, count in per_label_hits.items():
        assert report["exact"]["per_label"][label]["pred_matched"] == count
    gold_chars = sum(not c.isspace() for r in records for s in r["spans"] for c in r["text"][s["start"]:s["end"]])
    assert report["leakage"]["share"] == pytest.approx(leaked / gold_chars)
    assert report["n_docs"] == len(records)


def test_misaligned_or_broken_predictions_fail_with_file_and_line(tmp_path, shared_data_files):
    data = shared_data_files[0]
    records = _records(data)
    preds = tmp_path / "short.jsonl"
    rows = [{"id": r.get("id"), "spans": r["spans"]} for r in records]
    rows[1]["id"] = "not-the-same"
    _write_predictions(preds, rows)
    done = _evaluate(data, "--predictions", preds)
    assert done.returncode == 1
    assert f"{preds}:2: id does not match" in done.stderr
    assert records[1]["text"][:20] not in done.stderr
