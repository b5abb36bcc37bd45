"""Redaction hides every detected character whatever the alignment mode; redact(texts, nlp=...) stays aligned
with its inputs when nlp's error handler skips a doc."""
from __future__ import annotations

import warnings

import pytest

from component_fakes import FixedDetector, make_nlp, span_at
from spacy_privfilter.api import redact

TEXT = "Mail anna.smith@example.org or call Zeb at 555-0100x9 today."


@pytest.mark.parametrize("mode", ["strict", "contract", "expand"])
def test_detected_characters_are_hidden_in_every_alignment_mode(mode):
    # Spans off spaCy's token boundaries: strict drops them, contract shrinks them to nothing or less.
    spans = [span_at(TEXT, "smith@example", "email"), span_at(TEXT, "Ze", "first_name"),
             span_at(TEXT, "555-0100", "phone_number")]
    nlp = make_nlp(FixedDetector({TEXT: spans}), alignment_mode=mode)
    nlp.add_pipe("privacy_redactor", config={"style": "mask"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # strict/contract warn about the spans they could not align
        doc = nlp(TEXT)
    redacted = doc._.redacted_text
    assert len(redacted) == len(TEXT)  # mask keeps lengths, so the offsets still line up
    for span in spans:
        assert all(not ch.isalnum() for ch in redacted[span.start:span.end])
        assert TEXT[span.start:span.end] not in redacted
    assert redacted.startswith("Mail ") and redacted.endswith(" today.")


def test_redact_with_a_skipping_error_handler_returns_one_result_per_input_in_order():
    texts = ["Hi Anna", "BOOM Bob", "Call Zeb", "plain"]
    spans = {"Hi Anna": [span_at("Hi Anna", "Anna", "first_name")],
             "Call Zeb": [span_at("Call Zeb", "Zeb", "first_name")]}
    nlp = make_nlp(FixedDetector(spans, fail=["BOOM Bob"]))
    nlp.set_error_handler(lambda *args: None)
    out = redact(texts, nlp=nlp, batch_size=4)
    assert out == ["Hi [FIRST_NAME]", None, "Call [FIRST_NAME]", "plain"]
