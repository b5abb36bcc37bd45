"""Shipped recognizers and custom regex patterns over plain text (no spaCy)."""
from __future__ import annotations

import pytest

from spacy_privfilter.errors import ConfigError
from spacy_privfilter.recognizers import RECOGNIZERS, Found, Recognizers, parse_pattern
from spacy_privfilter.recognizers.patterns import PRIORITY_OTHER, PRIORITY_VALIDATED

TEXT = ("Card 4111 1111 1111 1111, not 4111 1111 1111 1112. IBAN GB82 WEST 1234 5698 7654 32, not "
        "GB82WEST12345698765433. SSN 536-22-1234, not 666-12-3456 or 536221234. NHS 943 476 5919, not 943 476 5918. "
        "Mail jane.doe@example.org; hosts 192.168.0.1, 999.1.1.1, 2001:db8::1, at 12:30:45; "
        "MAC 00:1A:2B:3C:4D:5E; see https://example.com/a?b=1. Call +44 20 7946 0958.")


def found_texts(rec, text=TEXT):
    return sorted((f.source, f.label, text[f.start:f.end]) for f in rec.find(text))


def test_every_shipped_recognizer_finds_valid_and_skips_invalid():
    # Read as US numbers, the NHS-shaped 943 476 5919 is a valid phone number too: read national numbers as GB.
    got = found_texts(Recognizers(builtins=[n for n in RECOGNIZERS if n != "nhs"], phone_regions=["GB"]))
    assert got == sorted([
        ("pattern:card", "credit_debit_card", "4111 1111 1111 1111"),
        ("pattern:iban", "account_number", "GB82 WEST 1234 5698 7654 32"),
        ("pattern:ssn", "ssn", "536-22-1234"),
        ("pattern:email", "email", "jane.doe@example.org"),
        ("pattern:ipv4", "ipv4", "192.168.0.1"),
        ("pattern:ipv6", "ipv6", "2001:db8::1"),
        ("pattern:mac", "mac_address", "00:1A:2B:3C:4D:5E"),
        ("pattern:url", "url", "https://example.com/a?b=1"),
        ("pattern:phone", "phone_number", "+44 20 7946 0958"),
    ])


def test_nhs_and_relabelling():
    rec = Recognizers(builtins=["nhs"], labels={"nhs": "medical_record_number"})
    assert found_texts(rec) == [("pattern:nhs", "medical_record_number", "943 476 5919")]


def test_phone_regions_read_national_numbers():
    text = "Ring 020 7946 0958 or (212) 555-0100."
    us = {text[f.start:f.end] for f in Recognizers(builtins=["phone"]).find(text)}
    both = {text[f.start:f.end] for f in Recognizers(builtins=["phone"], phone_regions=["GB", "US"]).find(text)}
    assert us == {"(212) 555-0100"} and both == {"020 7946 0958", "(212) 555-0100"}
    with pytest.raises(ConfigError, match="unknown: 'XX'"):
        Recognizers(builtins=["phone"], phone_regions=["XX"])


def test_unknown_names_list_the_choices():
    with pytest.raises(ConfigError, match="unknown recognizer name.*'cards'.*card, iban"):
        Recognizers(builtins=["cards"])
    with pytest.raises(ConfigError, match="recognizer_labels names unknown"):
        Recognizers(builtins=["card"], labels={"credit": "x"})


def test_custom_regex_finds_an_in_house_id_with_context_group_and_validator():
    rec = Recognizers(patterns=[
        {"label": "medical_record_number", "regex": r"\bMRN[:#\s]*(?P<value>\d{2}-\d{5})\b", "id": "mrn",
         "score": 0.97},
        {"label": "unique_id", "regex": r"\bST\d{16}\b", "validator": "luhn", "id": "study"},
    ])
    text = "MRN: 40-12345 and MRN#77-00001; study ST4111111111111111 but not ST4111111111111112."
    got = [(f.label, text[f.start:f.end], f.score, f.source, f.priority) for f in rec.find(text)]
    assert got == [("medical_record_number", "40-12345", 0.97, "pattern:mrn", PRIORITY_OTHER),
                   ("medical_record_number", "77-00001", 0.97, "pattern:mrn", PRIORITY_OTHER),
                   ("unique_id", "ST4111111111111111", 1.0, "pattern:study", PRIORITY_VALIDATED)]


def test_apply_merges_model_spans_with_patterns():
    text = "Card 4111 1111 1111 1111 for Jane"
    model = [{"start": 5, "end": 24, "label": "account_number", "score": 0.8},
             {"start": 29, "end": 33, "label": "first_name", "score": 0.9}]
    got = Recognizers(builtins=["card"]).apply(text, model)
    assert got == [Found("credit_debit_card", 5, 24, 1.0, "pattern:card", PRIORITY_VALIDATED),
                   Found("first_name", 29, 33, 0.9, "model", PRIORITY_OTHER)]


def test_apply_refuses_patterns_that_need_spacy():
    rec = Recognizers(patterns=[{"label": "company_name", "pattern": "Acme"}])
    with pytest.raises(ValueError, match="privacy_patterns component"):
        rec.apply("Acme", [])


@pytest.mark.parametrize("entry,message", [
    ("x", "must be an object"),
    ({"label": "x"}, "exactly one of 'pattern'"),
    ({"label": "x", "regex": "a", "pattern": "a"}, "exactly one of 'pattern'"),
    ({"label": "", "regex": "a"}, "'label' must be"),
    ({"label": "x", "regex": "(a"}, "does not compile"),
    ({"label": "x", "regex": "a", "score": 1.5}, "'score' must be"),
    ({"label": "x", "regex": "a", "validator": "nope"}, "unknown validator"),
    ({"label": "x", "regex": "a", "colour": "red"}, "unknown pattern key.*'colour'"),
    ({"label": "x", "pattern": []}, "phrase string or a non-empty list"),
])
def test_bad_patterns_name_the_place_and_field(entry, message):
    with pytest.raises(ConfigError, match=f"^here:3: .*{message}"):
        parse_pattern(entry, "here:3")


def test_pattern_lines_round_trip():
    lines = [{"label": "mrn", "regex": r"MRN\d+", "id": "m", "score": 0.5, "validator": "luhn", "ignore_case": True},
             {"label": "org", "pattern": "Acme"}, {"label": "id", "pattern": [{"LOWER": "id"}, {"IS_DIGIT": True}]}]
    assert [parse_pattern(line, "x").to_dict() for line in lines] == lines


def test_the_package_imports_no_spacy():
    import subprocess
    import sys

    code = ("import sys, spacy_privfilter.recognizers as r; r.Recognizers(builtins=['card']).find('x'); "
            "print('spacy' in sys.modules, 'phonenumbers' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False", "False"], done.stderr  # phonenumbers loads for 'phone' only
