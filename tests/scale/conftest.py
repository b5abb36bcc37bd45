"""Shared fixtures of the scale tests: a tiny random checkpoint and a table of records with two text columns."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from spacy_privfilter.testing import bioes_labels, tiny_config, write_random_checkpoint

SECRET = "Zebulon Quackenbush"
NAMES = ["Anna Smith", "Héloïse Dupont", "Jan de Vries", SECRET, "Li Wei", "Olusegun Bello"]
SUBJECTS = ["Follow-up for {name}", "Re: invoice {n}", "Call {name} back", "No personal data", "Hi"]
BODIES = ["Dear {name}, call 555-01{n:02d} or mail a{n}@example.com.", "Patient {name} (DOB 19{n:02d}-10-28) seen.",
          "Nothing to hide here, row {n}.", "{name} lives at {n} rue des Écoles, Paris.\nSecond line."]
CLASSES = ("email", "first_name", "last_name", "phone_number")


def make_rows(count: int = 200, seed: int = 0) -> list[dict]:
    """Records with an id, two text fields, a number, a nested note with a list of strings."""
    rng = random.Random(seed)
    rows = []
    for n in range(count):
        name, k = rng.choice(NAMES), rng.randrange(100)
        rows.append({"id": n, "subject": rng.choice(SUBJECTS).format(name=name, n=k),
                     "body": rng.choice(BODIES).format(name=name, n=k), "score": round(rng.random(), 3),
                     "note": {"title": f"note {n}", "lines": [f"Ask {rng.choice(NAMES)}", f"ref {k}"]}})
    return rows


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    config = tiny_config(id2label=bioes_labels(CLASSES))
    return write_random_checkpoint(tmp_path_factory.mktemp("scale-ckpt") / "tiny", config, format="hf", seed=3,
                                   classifier_scale=8.0)


@pytest.fixture(scope="session")
def nlp(checkpoint):
    spacy = pytest.importorskip("spacy")
    pytest.importorskip("torch")
    pipeline = spacy.blank("xx")
    pipeline.add_pipe("privacy_filter", config={"model": str(checkpoint)})
    pipeline.add_pipe("privacy_redactor")
    return pipeline


def redacted(nlp, texts: list[str]) -> list[str]:
    return [doc._.redacted_text for doc in nlp.pipe(texts)]


def expected_rows(nlp, rows: list[dict], keys=("subject", "body")) -> list[dict]:
    """What scrubbing ``keys`` of ``rows`` must give: each field through local ``nlp.pipe``, nothing else changed."""
    out = [dict(row) for row in rows]
    for key in keys:
        for row, text in zip(out, redacted(nlp, [row[key] for row in rows])):
            row[key] = text
    return out


@pytest.fixture(scope="session")
def local_outputs(tmp_path_factory, checkpoint):
    """A folder of JSONL/Parquet/CSV inputs and the bytes ``--engine local`` writes for it."""
    pytest.importorskip("pyarrow")
    from engine_checks import redact_folder, write_inputs

    root = tmp_path_factory.mktemp("scale-cli")
    src = write_inputs(root / "in")
    return src, redact_folder(src, root / "local", checkpoint, "local")


@pytest.fixture(scope="module")
def fault_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("faults")
