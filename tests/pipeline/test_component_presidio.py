"""examples/presidio_engine.py: Presidio's AnalyzerEngine with privacy_filter as its spaCy NLP engine."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from component_fakes import FixedDetector, span_at
from spacy_privfilter.testing import NEMOTRON_CLASSES

pytest.importorskip("presidio_analyzer")

RECIPE = Path(__file__).resolve().parents[2] / "examples" / "presidio_engine.py"
spec = importlib.util.spec_from_file_location("presidio_engine", RECIPE)
recipe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recipe)

TEXT = ("Patient Jane Doe (SSN 123-45-6789) lives in Springfield; mail jane.doe@example.org "
        "or call 555-201-7731.")
SPANS = [span_at(TEXT, "Jane", "first_name", 0.97), span_at(TEXT, "Doe", "last_name", 0.91),
         span_at(TEXT, "123-45-6789", "ssn", 0.88), span_at(TEXT, "Springfield", "city", 0.74),
         span_at(TEXT, "jane.doe@example.org", "email", 0.99),
         span_at(TEXT, "555-201-7731", "phone_number", 0.66),
         span_at(TEXT, "Patient", "occupation", 0.42)]


@pytest.fixture
def analyzer():
    nlp = recipe.build_pipeline(model="unused/for-this-test")
    nlp.get_pipe("privacy_filter").detector = FixedDetector({TEXT: SPANS}, classes=NEMOTRON_CLASSES)
    return recipe.build_analyzer(nlp)


def test_presidio_gets_privacy_filter_entities_and_scores(analyzer):
    results = sorted(analyzer.analyze(text=TEXT, language="en"), key=lambda r: r.start)
    got = [(r.entity_type, TEXT[r.start:r.end], round(r.score, 2)) for r in results]
    assert got == [("PERSON", "Jane", 0.97), ("PERSON", "Doe", 0.91), ("US_SSN", "123-45-6789", 0.88),
                   ("LOCATION", "Springfield", 0.74), ("EMAIL_ADDRESS", "jane.doe@example.org", 0.99),
                   ("PHONE_NUMBER", "555-201-7731", 0.66)]  # occupation has no Presidio name: not requested


def test_presidio_entity_filter_and_threshold(analyzer):
    results = analyzer.analyze(text=TEXT, language="en", entities=["PERSON", "PHONE_NUMBER"],
                               score_threshold=0.9)
    got = sorted((r.entity_type, TEXT[r.start:r.end]) for r in results)
    assert got == [("PERSON", "Doe"), ("PERSON", "Jane")]


def test_label_map_covers_presidio_core_entities():
    names = set(recipe.PRESIDIO_LABELS.values())
    assert {"PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "LOCATION", "DATE_TIME", "US_SSN"} <= names
    assert set(recipe.PRESIDIO_LABELS) <= set(NEMOTRON_CLASSES) | {
        "private_person", "private_email", "private_phone", "private_address", "private_date", "private_url"}
