"""examples/scrub_clinical_note.py keeps working: with an injected detector, and (slow) on a tiny checkpoint."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spacy_privfilter.redaction.redactor import restore
from spacy_privfilter.spans import CharSpan

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "scrub_clinical_note.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("scrub_clinical_note", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_pipeline_scrubs_the_note(example):
    component_fakes = pytest.importorskip("component_fakes")
    note = example.NOTE
    names = [("Clarence", "first_name"), ("Cobb", "last_name"), ("68779642", "medical_record_number"),
             ("10/28/1984", "date_of_birth"), ("(323) 462-5200", "phone_number"),
             ("clarence.cobb@example.com", "email")]
    spans = []
    for value, label in names:
        start = note.find(value)
        while start != -1:
            spans.append(CharSpan(label, start, start + len(value), 0.9))
            start = note.find(value, start + 1)
    detector = component_fakes.FixedDetector({note: sorted(spans, key=lambda s: s.start)},
                                             classes=tuple(sorted({label for _, label in names})))
    nlp = example.build_nlp("unused-model-path", style="surrogate", seed="example", keep_mapping=True)
    nlp.get_pipe("privacy_filter").detector = detector
    doc, rows = example.scrub(nlp, note)
    assert len(rows) == len(spans)
    for value, _ in names:
        assert value not in doc._.redacted_text
    assert "DISCHARGE SUMMARY" in doc._.redacted_text
    assert restore(doc._.redacted_text, doc._.redactions) == note


@pytest.mark.slow
def test_example_runs_end_to_end_on_a_tiny_checkpoint(tiny_checkpoint):
    pytest.importorskip("torch")
    from spacy_privfilter.testing import NEMOTRON_CLASSES

    model = tiny_checkpoint(NEMOTRON_CLASSES, classifier_scale=10.0)
    out = subprocess.run([sys.executable, str(EXAMPLE), "--model", str(model), "--backend", "torch", "--restore"],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "restore() gives back the original note: True" in out.stderr
