"""End to end through the command line (in process, and one real console-script run): stderr never quotes
PII on success or failure paths, and awkward input is reported by file and line without ending the run.

Shares the tiny checkpoint recipe and the marker texts of ``test_end_to_end.py``.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from test_end_to_end import MARKED_TEXTS, MARKERS, checkpoint, make_nlp, no_marker_in, one_torch_thread  # noqa: F401

pytest.importorskip("torch")
pytest.importorskip("spacy")


def marked_inputs(folder: Path) -> dict[str, Path]:
    """A JSONL with gold spans on the markers (and bad lines that quote one), a text file and a binary file."""
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for text in MARKED_TEXTS:
        spans = [{"start": text.index(m), "end": text.index(m) + len(m), "label": "first_name"}
                 for m in MARKERS if m in text]
        records.append({"text": text, "spans": spans, "id": len(records)})
    good = folder / "gold.jsonl"
    good.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    bad = folder / "bad.jsonl"
    bad.write_text(json.dumps(records[0]) + "\n" + '{"text": "broken ' + MARKERS[0] + ' line\n'
                   + json.dumps({"text": MARKERS[1], "spans": [{"start": 0, "end": 999, "label": "x"}]}) + "\n"
                   + json.dumps([MARKERS[3]]) + "\n", encoding="utf-8")
    note = folder / "note.txt"
    note.write_text(MARKED_TEXTS[1] + "\n", encoding="utf-8")
    binary = folder / "blob.txt"
    binary.write_bytes(b"\xff\xfe" + MARKERS[0].encode() + b"\x00\x80")
    return {"good": good, "bad": bad, "note": note, "binary": binary}


@pytest.mark.parametrize("verbosity", ["-v", "-vv"])
def test_cli_stderr_never_quotes_pii(checkpoint, tmp_path, capsys, verbosity):
    from spacy_privfilter.cli.parser import main

    files = marked_inputs(tmp_path / "in")
    model = ["--model", str(checkpoint), "--backend", "torch", verbosity]
    runs = {
        "redact": ["redact", str(files["bad"]), str(files["note"]), str(files["binary"]), "-o",
                   str(tmp_path / "out"), "--alignment-mode", "strict", "--with-redactions", *model],
        "detect": ["detect", str(files["bad"]), str(files["note"]), "-o", str(tmp_path / "spans.jsonl"), *model],
        "evaluate": ["evaluate", str(files["good"]), "--json", *model],
        "evaluate-bad": ["evaluate", str(files["bad"]), *model],
    }
    codes = {}
    for name, argv in runs.items():
        codes[name] = main(argv)
        captured = capsys.readouterr()
        assert no_marker_in(captured.err), name
        if name == "redact":  # regression: json's message ends in " at", which read "... character at at column 35"
            assert "bad.jsonl:2: invalid JSON (Invalid control character, column 35)" in captured.err
        if name == "evaluate":
            report = json.loads(captured.out)
            assert no_marker_in(captured.out) and report
    assert codes == {"redact": 1, "detect": 1, "evaluate": 0, "evaluate-bad": 1}  # bad lines: non-zero exit
    spans_out = (tmp_path / "spans.jsonl").read_text(encoding="utf-8")
    assert spans_out.strip() and no_marker_in(spans_out)  # detect writes no text without --with-text


def test_console_script_stderr_on_stdin_never_quotes_pii(checkpoint):
    env_text = "\n".join(MARKED_TEXTS).encode("utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "spacy_privfilter", "redact", "-", "--model", str(checkpoint), "--backend", "torch",
         "--alignment-mode", "strict", "-vv"], input=env_text, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode("utf-8", "replace")[-2000:]
    stderr = result.stderr.decode("utf-8")
    assert "AlignmentWarning" in stderr and no_marker_in(stderr)
    assert result.stdout.decode("utf-8") != "\n".join(MARKED_TEXTS)  # something was redacted


def test_cli_jsonl_with_a_cut_emoji_escape_loses_no_line(checkpoint, tmp_path, capsys):
    """Regression: a JSON "\\ud83d" escape (an emoji cut by a JavaScript export) stopped the whole run."""
    from spacy_privfilter.cli.parser import main

    lines = [{"text": MARKED_TEXTS[0], "id": 1}, {"text": f"cut emoji \ud83d for {MARKERS[3]}", "id": 2},
             {"text": MARKED_TEXTS[1], "id": 3}]
    source = tmp_path / "export.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="ascii")  # escapes, as JSON.stringify
    model = ["--model", str(checkpoint), "--backend", "torch"]
    assert main(["redact", str(source), "-o", str(tmp_path / "out.jsonl"), *model]) == 0
    assert main(["detect", str(source), "-o", str(tmp_path / "spans.jsonl"), *model]) == 0
    err = capsys.readouterr().err
    assert err.count("export.jsonl:2: 1 lone surrogate(s)") == 2 and no_marker_in(err)
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in out] == [1, 2, 3]
    nlp = make_nlp(checkpoint)
    expected = nlp(lines[1]["text"].replace("\ud83d", "\ufffd"))._.redacted_text
    assert out[1]["text"] == expected
    spans = [json.loads(line) for line in (tmp_path / "spans.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(spans) == 3 and all(s["end"] <= len(lines[1]["text"]) for s in spans[1]["spans"])


def test_cli_skips_a_document_over_max_length_and_keeps_going(checkpoint, tmp_path, capsys):
    """Regression: one text file over spaCy's nlp.max_length ended the run with 'unexpected ValueError'."""
    from spacy_privfilter.cli.parser import main

    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text(MARKED_TEXTS[0], encoding="utf-8")
    (folder / "b.txt").write_text((MARKED_TEXTS[1] + " ") * (1_000_001 // len(MARKED_TEXTS[1]) + 1), encoding="utf-8")
    (folder / "c.txt").write_text(MARKED_TEXTS[1], encoding="utf-8")
    code = main(["redact", str(folder), "-o", str(tmp_path / "out"), "--model", str(checkpoint), "--backend",
                 "torch"])
    err = capsys.readouterr().err
    assert code == 1 and "b.txt: " in err and "nlp.max_length of 1000000" in err and no_marker_in(err)
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) == ["a.txt", "c.txt"]
    nlp = make_nlp(checkpoint)
    assert (tmp_path / "out" / "c.txt").read_text(encoding="utf-8") == nlp(MARKED_TEXTS[1])._.redacted_text


def test_cli_evaluate_names_a_record_over_max_length(checkpoint, tmp_path, capsys):
    from spacy_privfilter.cli.parser import main

    long_text = MARKERS[0] + " x" * 500_001
    data = tmp_path / "gold.jsonl"
    data.write_text(json.dumps({"text": MARKED_TEXTS[0], "spans": []}) + "\n"
                    + json.dumps({"text": long_text, "spans": [{"start": 0, "end": 12, "label": "first_name"}]})
                    + "\n", encoding="utf-8")
    assert main(["evaluate", str(data), "--model", str(checkpoint), "--backend", "torch"]) == 1
    err = capsys.readouterr().err
    assert "gold.jsonl:2: 1000014 characters, more than spaCy's nlp.max_length" in err and no_marker_in(err)
