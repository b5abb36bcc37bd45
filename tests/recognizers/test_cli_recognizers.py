"""--recognizers, --patterns, --deny and --allow on redact, detect and evaluate (in process)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from spacy_privfilter.cli.parser import main
from spacy_privfilter.recognizers import Recognizers
from spacy_privfilter.testing import bioes_labels, tiny_config, write_random_checkpoint

pytest.importorskip("spacy")
pytest.importorskip("torch")

NOTE = "Pt seen at Riverside Clinic, MRN 40-12345, paid by card 4111 1111 1111 1111 for Project Zebra.\n"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    config = tiny_config(id2label=bioes_labels(("first_name", "last_name")))
    return write_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", config, format="hf", seed=5)


@pytest.fixture
def rule_files(tmp_path):
    (tmp_path / "patterns.jsonl").write_text(json.dumps(
        {"label": "medical_record_number", "regex": r"\bMRN\s*(?P<value>\d{2}-\d{5})\b", "id": "mrn"}) + "\n")
    (tmp_path / "deny.jsonl").write_text(json.dumps({"term": "project zebra", "label": "company_name",
                                                     "ignore_case": True}) + "\n")
    (tmp_path / "allow.txt").write_text("Riverside Clinic\n")
    (tmp_path / "note.txt").write_text(NOTE)
    return ["--patterns", str(tmp_path / "patterns.jsonl"), "--deny", str(tmp_path / "deny.jsonl"),
            "--allow", str(tmp_path / "allow.txt"), "--recognizers", "card"]


def test_redact_and_detect_with_site_rules(tmp_path, checkpoint, rule_files):
    out = tmp_path / "note.redacted.txt"
    assert main(["redact", str(tmp_path / "note.txt"), "-o", str(out), "--model", str(checkpoint), "-q",
                 *rule_files]) == 0
    redacted = out.read_text()
    for secret in ("40-12345", "4111", "Zebra"):
        assert secret not in redacted
    assert "[MEDICAL_RECORD_NUMBER]" in redacted and "[CREDIT_DEBIT_CARD]" in redacted
    spans = tmp_path / "spans.jsonl"
    assert main(["detect", str(tmp_path / "note.txt"), "-o", str(spans), "--model", str(checkpoint), "-q",
                 *rule_files]) == 0
    row = json.loads(spans.read_text())
    by_source = {s["source"]: NOTE[s["start"]:s["end"]] for s in row["spans"] if s["source"] != "model"}
    assert by_source == {"pattern:mrn": "40-12345", "pattern:card": "4111 1111 1111 1111", "deny": "Project Zebra"}


@pytest.mark.parametrize("change, fragment", [
    (("--recognizers", "card,visa"), "--recognizers: unknown name(s) visa; choose from card, iban"),
    (("--patterns", "{bad}"), "{bad}:2: 'regex' does not compile"),
])
def test_bad_rules_are_usage_errors_before_the_model_loads(tmp_path, capsys, rule_files, change, fragment):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"label": "x", "regex": "a"}\n{"label": "x", "regex": "(unclosed"}\n')
    argv = ["detect", str(tmp_path / "note.txt"), "--model", str(tmp_path / "no-model-needed"),
            *[a.format(bad=bad) for a in change]]
    assert main(argv) == 2
    assert fragment.format(bad=bad) in capsys.readouterr().err


NAMES = ["card", "iban", "ssn", "email", "ipv4", "ipv6", "mac", "url", "phone"]


def test_evaluate_oracle_plus_recognizers_reports_per_source_counts(tmp_path, capsys, shared_data_files):
    records = [json.loads(line) for path in shared_data_files for line in path.read_text().splitlines() if line]
    oracle = tmp_path / "oracle.jsonl"
    oracle.write_text("".join(json.dumps({"id": r.get("id"), "spans": r["spans"]}) + "\n" for r in records))
    assert main(["evaluate", *map(str, shared_data_files), "--predictions", str(oracle), "--json",
                 "--recognizers", ",".join(NAMES)]) == 0
    report = json.loads(capsys.readouterr().out)
    by_source = report["by_source"]
    assert sum(c["n_pred"] for c in by_source.values()) == report["exact"]["overall"]["n_pred"]
    assert {"model", "pattern:card", "pattern:iban", "pattern:ssn", "pattern:ipv4"} <= set(by_source)
    # Validated card numbers outrank every model label, so each card the recognizer finds is reported under
    # its name: count them (and those that are gold cards) with the recognizer alone, no merging, no spaCy.
    finds = [(r, f) for r in records for f in Recognizers(builtins=["card"]).find(r["text"])]
    gold_hits = sum(any((s["start"], s["end"], s["label"]) == (f.start, f.end, f.label) for s in r["spans"])
                    for r, f in finds)
    assert (by_source["pattern:card"]["n_pred"], by_source["pattern:card"]["exact"]) == (len(finds), gold_hits)
    # Merging never uncovers a letter or digit, so with oracle spans only punctuation inside gold spans can leak.
    punctuation = sum(not c.isalnum() and not c.isspace() for r in records for s in r["spans"]
                      for c in r["text"][s["start"]:s["end"]])
    assert report["leakage"]["leaked_chars"] <= punctuation
    print("\nper-source counts: " + ", ".join(f"{k}={v['n_pred']}/{v['exact']}" for k, v in by_source.items()))
