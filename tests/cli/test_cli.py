"""End-to-end: the real console script in a subprocess on a tiny random checkpoint.

Each spawn imports spaCy and torch (seconds), so the cases are few and each covers several behaviours.
Expected outputs come from the Python API (``nlp.pipe`` with the same components), not from the CLI code.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest


pytest.importorskip("torch")
spacy = pytest.importorskip("spacy")

SECRET = "Zebulon Quackenbush"
TEXTS = [
    f"Dear {SECRET}, call 555-0100 or mail zq@example.com today.",
    "Patient Anna Smith (DOB 1984-10-28) was seen by Dr. Hines.",
    "No personal data in this one.",
    "Héloïse Dupont, 12 rue des Écoles, Paris – tél. 01 23 45 67 89.\nSecond line for Anna.",
]
CLASSES = ("email", "first_name", "last_name", "phone_number")


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint) -> Path:
    # classifier_scale makes the random model confident, so it finds (random) spans in every text
    return tiny_checkpoint(CLASSES, seed=3, classifier_scale=8.0)


@pytest.fixture(scope="module")
def nlp(checkpoint):
    pipeline = spacy.blank("xx")
    pipeline.add_pipe("privacy_filter", config={"model": str(checkpoint)})
    pipeline.add_pipe("privacy_redactor")
    return pipeline


def redacted(nlp, texts):
    return [doc._.redacted_text for doc in nlp.pipe(texts)]


def cli(*args, stdin: bytes | None = None, script: bool = False, env: dict | None = None, cwd=None):
    """Run the command line for real; returns the CompletedProcess (bytes stdout/stderr)."""
    if script:
        exe = shutil.which("spacy-privfilter") or str(Path(sys.executable).with_name("spacy-privfilter"))
        command = [exe, *map(str, args)]
    else:
        command = [sys.executable, "-m", "spacy_privfilter", *map(str, args)]
    return subprocess.run(command, input=stdin, capture_output=True, timeout=300, cwd=cwd,
                          env={**os.environ, **(env or {})})


def test_folder_jsonl_and_bad_inputs(tmp_path, checkpoint, nlp):
    notes = tmp_path / "notes"
    (notes / "sub").mkdir(parents=True)
    (notes / "a.txt").write_text(TEXTS[0], encoding="utf-8")
    (notes / "sub" / "b.txt").write_bytes(TEXTS[3].replace("\n", "\r\n").encode("utf-8"))
    (notes / "binary.txt").write_bytes(b"\x00\x01\x02" + SECRET.encode())
    (notes / "latin.txt").write_bytes(TEXTS[3].encode("latin-1", errors="replace"))
    records = [{"id": i, "text": t, "meta": {"k": i}} for i, t in enumerate(TEXTS)]
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    lines.insert(2, '{"id": 99, "text": "' + SECRET)            # line 3: broken JSON
    lines.insert(4, json.dumps({"id": 98, "body": SECRET}))   # line 5: no "text" key
    (notes / "sub" / "c.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"

    done = cli("redact", notes, tmp_path / "missing.txt", "-o", out, "--model", checkpoint, "--batch-size", 2)

    assert done.returncode == 1, done.stderr.decode()
    stderr = done.stderr.decode()
    for fragment in ("missing.txt: no such file", "binary.txt: looks like a binary", "latin.txt:1: not valid utf-8",
                     "c.jsonl:3: invalid JSON", "c.jsonl:5: key 'text' is missing"):
        assert fragment in stderr
    assert "Zebulon" not in stderr and "Anna" not in stderr
    assert done.stdout == b"" and "doc/s" not in stderr  # nothing on stdout with -o; no progress bar when piped
    # the good inputs are all there, mirrored under the folder's name, and equal the Python API's output
    produced = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert produced == ["notes/a.txt", "notes/sub/b.txt", "notes/sub/c.jsonl"]
    assert (out / "notes" / "a.txt").read_text(encoding="utf-8") == redacted(nlp, [TEXTS[0]])[0]
    crlf = TEXTS[3].replace("\n", "\r\n")
    assert (out / "notes" / "sub" / "b.txt").read_bytes().decode("utf-8") == redacted(nlp, [crlf])[0]
    written = [json.loads(line) for line in (out / "notes" / "sub" / "c.jsonl").read_text("utf-8").splitlines()]
    assert written == [{**r, "text": t} for r, t in zip(records, redacted(nlp, TEXTS))]
    assert written[0]["text"] != TEXTS[0]


def test_stdin_lines_through_the_installed_script(checkpoint, nlp):
    data = "".join(text.replace("\n", " ") + "\n" for text in TEXTS).encode("utf-8")
    done = cli("redact", "-", "--format", "lines", "--model", checkpoint, "--style", "mask", "-q", stdin=data,
               script=True)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stderr == b""  # -q: no summary
    masker = spacy.blank("xx")
    masker.add_pipe("privacy_filter", config={"model": str(checkpoint)})
    masker.get_pipe("privacy_filter").detector = nlp.get_pipe("privacy_filter").detector  # same model, no reload
    masker.add_pipe("privacy_redactor", config={"style": "mask"})
    expected = redacted(masker, [text.replace("\n", " ") for text in TEXTS])
    assert done.stdout.decode("utf-8").splitlines() == expected
    assert expected != [text.replace("\n", " ") for text in TEXTS]


# The command line with one fault injected: SIGKILL at the first progress save at or past N input positions, i.e.
# right after that batch's output was written and flushed but before its progress is recorded (the worst moment).
KILLED_CLI = """
import os, signal, sys
from spacy_privfilter.cli import outputs, parser

limit, real_save = int(sys.argv[1]), outputs.Progress.save

def save(self, done, sizes):
    if done >= limit:
        os.kill(os.getpid(), signal.SIGKILL)
    real_save(self, done, sizes)

outputs.Progress.save = save
sys.exit(parser.main(sys.argv[2:]))
"""


def test_resume_after_a_killed_run_gives_the_uninterrupted_result(tmp_path, checkpoint, nlp):
    records = [{"n": i, "text": TEXTS[i % len(TEXTS)] + f" #{i}"} for i in range(30)]
    data = tmp_path / "big.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    out = tmp_path / "clean.jsonl"
    args = ("redact", data, "-o", out, "--model", checkpoint, "--batch-size", 4)

    # SIGKILL right after the batch that passes 14 documents is written, before its progress is saved
    killed = subprocess.run([sys.executable, "-c", KILLED_CLI, "14", *map(str, args)], capture_output=True,
                            timeout=300)
    assert killed.returncode == -signal.SIGKILL
    assert len(out.read_bytes().splitlines()) == 16
    progress = json.loads(out.with_name("clean.jsonl.progress.json").read_text())
    assert progress["done"] == 12

    resumed = cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr.decode()
    expected = [{**r, "text": t} for r, t in zip(records, redacted(nlp, [r["text"] for r in records]))]
    assert [json.loads(line) for line in out.read_text("utf-8").splitlines()] == expected
    assert not out.with_name("clean.jsonl.progress.json").exists()
