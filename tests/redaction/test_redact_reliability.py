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


def test_mapping_is_lossless_two_values_behind_one_replacement_are_not_merged():
    from spacy_privfilter.redaction.redactor import restore

    text = "Anna met Bert."
    out = redact_text(text, [("first_name", 0, 4), ("first_name", 9, 13)], keep_mapping=True)
    assert out.mapping == {"[FIRST_NAME]": None}  # one tag, two originals: not "Bert" alone
    with pytest.raises(ValueError, match="more than one original"):
        restore(out.redacted_text, out.mapping)
    assert restore(out.redacted_text, out.redactions) == text  # the records keep both
    masked = redact_text(text, [("first_name", 0, 4), ("first_name", 9, 13)], style="mask", keep_mapping=True)
    assert masked.mapping == {"****": None}


def test_restore_from_placeholders_in_text_edited_afterwards():
    from spacy_privfilter.redaction.redactor import restore

    text = "Anna Smith called Bert from 555-0100. Anna was upset."
    spans = [("first_name", 0, 4), ("last_name", 5, 10), ("first_name", 18, 22), ("phone_number", 28, 36),
             ("first_name", 38, 42)]
    out = redact_text(text, spans, tag_format="[{LABEL}_{n}]", keep_mapping=True)
    assert out.redacted_text == ("[FIRST_NAME_1] [LAST_NAME_1] called [FIRST_NAME_2] from [PHONE_NUMBER_1]. "
                                 "[FIRST_NAME_1] was upset.")
    edited = "Summary: [FIRST_NAME_1] [LAST_NAME_1] (upset) phoned [FIRST_NAME_2]; callback [PHONE_NUMBER_1]."
    with pytest.raises(ValueError, match="edited=True"):
        restore(edited, out.redactions)
    assert restore(edited, out.redactions, edited=True) == \
        "Summary: Anna Smith (upset) phoned Bert; callback 555-0100."
    assert restore(edited, out.mapping) == "Summary: Anna Smith (upset) phoned Bert; callback 555-0100."

    plain = redact_text(text, spans, keep_mapping=True)
    with pytest.raises(ValueError, match="more than one original"):
        restore("Note: [FIRST_NAME] called.", plain.redactions, edited=True)
    assert restore("Call [PHONE_NUMBER].", plain.redactions, edited=True) == "Call 555-0100."
    removed = redact_text(text, spans, style="remove", keep_mapping=True)
    with pytest.raises(ValueError, match="removed"):
        restore("anything", removed.redactions, edited=True)


@pytest.mark.parametrize("tag_format", ["[{LABEL:>99999999}]", "[{label:.1}]", "[{n:05d}]", "[{LABEL!r}]"])
def test_tag_format_refuses_width_precision_and_conversion(tag_format):
    from spacy_privfilter.errors import ConfigError

    with pytest.raises(ConfigError, match="format spec"):
        RedactionConfig(tag_format=tag_format)
