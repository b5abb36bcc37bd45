"""Masks hide every character; surrogates keep no value of their document and are the same from any thread."""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from spacy_privfilter.redaction.redactor import RedactionConfig, Redactor, mask_value, redact_text

pytest.importorskip("faker")


@pytest.mark.parametrize("value", ["#$%&!!*@", "😀🙂", "~~~", "a-b", "12#$", "pass word!"])
def test_mask_hides_every_character_of_values_that_are_not_written_numbers(value):
    assert mask_value(value) == "*" * len(value)
    assert mask_value(value, keep_last=1).count("*") >= len(value) - 1


@pytest.mark.parametrize("value, masked", [("555-010-1234", "***-***-****"), ("12/03/2020", "**/**/****"),
                                           ("+1 (555) 010 1234", "+* (***) *** ****")])
def test_mask_keeps_the_separators_of_written_numbers(value, masked):
    assert mask_value(value) == masked


def test_redact_text_masks_a_symbol_password():
    text = "pw: #$%&!!*@ end"
    out = redact_text(text, [("password", 4, 12)], style="mask")
    assert out.redacted_text == "pw: ******** end"


def test_a_surrogate_never_repeats_a_value_or_value_part_of_its_document_as_a_word():
    # Without the document's other values the generator would often pick a common surname that is in the text.
    surnames = ["Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Garcia", "Wilson", "Moore"]
    text = ", ".join(f"{a} {b}" for a, b in zip(surnames, surnames[1:] + surnames[:1]))
    spans, at = [], 0
    for a, b in zip(surnames, surnames[1:] + surnames[:1]):
        spans.append(("person", at, at + len(a) + 1 + len(b)))
        at += len(a) + len(b) + 3
    parts = {s.casefold() for s in surnames}
    for seed in range(40):
        out = redact_text(text, spans, style="surrogate", seed=seed)
        for record in out.redactions:
            words = set(re.findall(r"\w+", record["replacement"].casefold()))
            assert not words & parts, (seed, record["replacement"])


def test_surrogates_are_the_same_from_two_threads_as_in_series():
    redactor = Redactor(RedactionConfig(style="surrogate", seed="threads"))
    texts = [f"Patient Anna Smith{i} (anna{i}@example.org, 555-01{i:02d}) saw Dr Lee{i} on 2020-03-{i % 28 + 1:02d}."
             for i in range(300)]

    def spans(text):
        found = [("person", m.start(), m.end()) for m in re.finditer(r"Anna Smith\d+|Lee\d+", text)]
        found += [("email", m.start(), m.end()) for m in re.finditer(r"\S+@\S+\.org", text)]
        found += [("phone_number", m.start(), m.end()) for m in re.finditer(r"555-\d+", text)]
        return found + [("date", m.start(), m.end()) for m in re.finditer(r"\d{4}-\d\d-\d\d", text)]

    def one(text):
        return redactor.redact(text, spans(text)).redacted_text

    serial = [one(t) for t in texts]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(one, texts))
    assert parallel == serial
