"""privacy_patterns in a pipeline: custom patterns beside the model, allow and deny lists, the merged group that
privacy_redactor redacts, and scores/sources kept parallel with spaCy's span_ruler before or after it."""
from __future__ import annotations

import numpy as np
import pytest
import spacy

from component_fakes import FixedDetector, make_nlp, span_at
from confection import ConfigValidationError

from spacy_privfilter.errors import ConfigError
from spacy_privfilter.pipeline.privacy_patterns import PrivacyPatterns
from spacy_privfilter.pipeline.span_groups import span_scores, span_sources

NOTE = "Seen by Anna Berg at Riverside Clinic, MRN 40-12345, card 4111 1111 1111 1111, re Project Zebra."
MODEL = [span_at(NOTE, "Anna", "first_name", 0.91), span_at(NOTE, "Berg", "last_name", 0.88),
         span_at(NOTE, "Riverside Clinic", "company_name", 0.77),
         span_at(NOTE, "4111 1111 1111 1111", "phone_number", 0.6)]  # the model mislabels the card
MRN = {"label": "medical_record_number", "regex": r"\bMRN\s*(?P<value>\d{2}-\d{5})\b", "id": "mrn"}


def pipeline(*, redact=True, **config):
    nlp = make_nlp(FixedDetector({NOTE: MODEL}))
    patterns = nlp.add_pipe("privacy_patterns", config=config)
    if redact:
        nlp.add_pipe("privacy_redactor")
    return nlp, patterns


def table(doc, key="pii"):
    group = doc.spans[key]
    assert len(group.attrs["scores"]) == len(group) == len(group.attrs["sources"])
    return [(s.label_, s.text, round(float(x), 2), src)
            for s, x, src in zip(group, group.attrs["scores"], group.attrs["sources"])]


def test_model_alone_records_its_source():
    doc = make_nlp(FixedDetector({NOTE: MODEL}))(NOTE)
    assert doc.spans["pii"].attrs["sources"] == ["model"] * 4


def test_custom_regex_finds_what_the_model_misses_and_the_redactor_hides_it():
    nlp, patterns = pipeline(recognizers=["card"])
    patterns.add_patterns([MRN])
    doc = nlp(NOTE)
    assert table(doc) == [("first_name", "Anna", 0.91, "model"), ("last_name", "Berg", 0.88, "model"),
                          ("company_name", "Riverside Clinic", 0.77, "model"),
                          ("medical_record_number", "40-12345", 1.0, "pattern:mrn"),
                          ("credit_debit_card", "4111 1111 1111 1111", 1.0, "pattern:card")]
    assert "40-12345" not in doc._.redacted_text and "[MEDICAL_RECORD_NUMBER]" in doc._.redacted_text
    assert "[CREDIT_DEBIT_CARD]" in doc._.redacted_text and "[PHONE_NUMBER]" not in doc._.redacted_text


def test_allow_listed_clinic_is_not_redacted_and_deny_terms_are():
    nlp, patterns = pipeline()
    patterns.add_allow(["Riverside Clinic"])
    patterns.add_deny([{"term": "project zebra", "label": "company_name", "ignore_case": True}])
    doc = nlp(NOTE)
    assert "Riverside Clinic" in doc._.redacted_text and "Zebra" not in doc._.redacted_text
    assert doc._.redacted_text.endswith("re [COMPANY_NAME].")
    group = doc.spans["pii"]
    assert group.attrs["allowed"] == 1 and ("company_name", "Project Zebra", 1.0, "deny") in table(doc)


def test_allow_partial_drops_spans_containing_an_allowed_term():
    text = "Transfer to Riverside Clinic Annex today."
    nlp = make_nlp(FixedDetector({text: [span_at(text, "Riverside Clinic Annex", "company_name")]}))
    exact = nlp.add_pipe("privacy_patterns")
    exact.add_allow(["Riverside Clinic"])
    assert len(nlp(text).spans["pii"]) == 1
    nlp.remove_pipe("privacy_patterns")
    partial = nlp.add_pipe("privacy_patterns", config={"allow_partial": True})
    partial.add_allow(["Riverside Clinic"])
    doc = nlp(text)
    assert len(doc.spans["pii"]) == 0 and doc.spans["pii"].attrs["allowed"] == 1


def test_phrase_and_token_patterns_with_validators():
    text = "Study ST-4111111111111111 and ST-4111111111111112 at acme health."
    nlp = spacy.blank("en")  # no model: the component creates the group
    patterns = nlp.add_pipe("privacy_patterns")
    patterns.add_patterns([
        {"label": "unique_id", "pattern": [{"TEXT": {"REGEX": r"^ST-\d{16}$"}}], "validator": "luhn", "id": "study"},
        {"label": "company_name", "pattern": "Acme Health", "ignore_case": True, "score": 0.7}])
    assert table(nlp(text)) == [("unique_id", "ST-4111111111111111", 1.0, "pattern:study"),
                                ("company_name", "acme health", 0.7, "pattern:company_name")]
    with pytest.raises(ConfigError, match="token pattern 'bad'.*not a valid spaCy Matcher pattern"):
        patterns.add_patterns([{"label": "x", "id": "bad", "pattern": [{"NOT_AN_ATTR": 1}]}])
        nlp("anything")


def test_pattern_matches_snap_to_tokens():
    # spaCy's English tokenizer reads "ref:40" as one token: the match "40-123" grows to whole tokens, so the
    # redactor hides "ref:40-12345" rather than leave "ref:" + "45" around a hole.
    nlp = spacy.blank("en")
    nlp.add_pipe("privacy_patterns").add_patterns([{"label": "mrn", "regex": r"\d{2}-\d{3}"}])
    doc = nlp("ref:40-12345.")
    assert [t.text for t in doc] == ["ref:40", "-", "12345", "."]
    assert [(s.text, s.start, s.end) for s in doc.spans["pii"]] == [("ref:40-12345", 0, 3)]


@pytest.mark.parametrize("ruler_first", [True, False])
def test_scores_and_sources_stay_parallel_with_span_ruler(ruler_first):
    nlp = make_nlp(FixedDetector({NOTE: MODEL}))
    names = ["span_ruler", "privacy_patterns"] if ruler_first else ["privacy_patterns", "span_ruler"]
    for name in names:
        # overwrite=False: span_ruler's default replaces the whole group (the model's spans included).
        component = nlp.add_pipe(name, config={"spans_key": "pii", "overwrite": False} if name == "span_ruler" else {})
        if name == "span_ruler":
            component.add_patterns([{"label": "company_name", "pattern": "Project Zebra"}])
        else:
            component.add_patterns([MRN])
    nlp.add_pipe("privacy_redactor")
    doc = nlp(NOTE)
    group = doc.spans["pii"]
    expected = {("first_name", "Anna", 0.91, "model"), ("last_name", "Berg", 0.88, "model"),
                ("medical_record_number", "40-12345", 1.0, "pattern:mrn"),
                ("company_name", "Project Zebra", 1.0, "external")}
    if ruler_first:  # privacy_patterns merged the ruler's span: the group is parallel again
        assert expected <= set(table(doc))
    else:  # span_ruler appended after it: attrs are one short, and the reading rule fills in the new span
        assert len(group) == len(group.attrs["scores"]) + 1
        got = {(s.label_, s.text, round(x, 2), src) for s, x, src in zip(group, span_scores(group),
                                                                        span_sources(group))}
        assert expected <= got
    assert "Zebra" not in doc._.redacted_text and "40-12345" not in doc._.redacted_text


def test_redactor_uses_the_scores_of_an_out_of_step_group():
    text = "Call Jane now"
    nlp = spacy.blank("en")
    nlp.add_pipe("privacy_redactor")
    doc = nlp.make_doc(text)
    doc.spans["pii"] = [doc.char_span(5, 9, "first_name"), doc.char_span(5, 9, "last_name")]
    doc.spans["pii"].attrs["scores"] = np.asarray([0.3, 0.9], dtype=np.float32)
    doc.spans["pii"].append(doc.char_span(5, 9, "user_name"))  # as span_ruler does: no score
    assert span_scores(doc.spans["pii"]) == pytest.approx([0.3, 0.9, 1.0])
    assert nlp(doc)._.redacted_text == "Call [USER_NAME] now"


def test_rerunning_the_component_changes_nothing():
    nlp, patterns = pipeline(redact=False, recognizers=["card"])
    patterns.add_patterns([MRN])
    patterns.add_deny([{"term": "Project Zebra", "label": "company_name"}])
    doc = nlp(NOTE)
    first = table(doc)
    assert table(patterns(doc)) == first


def test_config_errors_name_the_option():
    nlp = spacy.blank("en")
    with pytest.raises(ConfigValidationError, match="recognizers.*'visa' is not typing.Literal"):
        nlp.add_pipe("privacy_patterns", config={"recognizers": ["visa"]})
    with pytest.raises(ConfigError, match="unknown recognizer name.*'visa'.*card, iban"):  # built directly
        PrivacyPatterns(nlp, recognizers=["visa"])
    with pytest.raises(ConfigError, match="'allow_partial' must be true or false"):
        PrivacyPatterns(nlp, allow_partial="yes")


def test_readme_hospital_example():
    """The README's example, with the model's output fixed (including a wrong phone_number on the MRN digits)."""
    text = ("Mrs Jane Okafor (MRN SEH-0048213) was moved to Ward 7B at St Elsewhere Hospital; "
            "card 4111 1111 1111 1111 on file. Enrolled in Project Nightingale.")
    model = [span_at(text, "Jane", "first_name", 0.99), span_at(text, "Okafor", "last_name", 0.98),
             span_at(text, "0048213", "phone_number", 0.41),
             span_at(text, "St Elsewhere Hospital", "company_name", 0.87), span_at(text, "Ward 7B", "street_address")]
    nlp = make_nlp(FixedDetector({text: model}))
    rules = nlp.add_pipe("privacy_patterns", config={"recognizers": ["card", "iban", "email", "phone"]})
    rules.add_patterns([{"label": "medical_record_number", "id": "seh_mrn", "regex": r"\bSEH-\d{7}\b",
                         "score": 0.99}])
    rules.add_allow([{"term": "St Elsewhere Hospital"}, {"regex": r"Ward \d+[A-Z]?"}])
    rules.add_deny([{"term": "Project Nightingale", "label": "company_name", "ignore_case": True}])
    nlp.add_pipe("privacy_redactor")
    doc = nlp(text)
    assert doc._.redacted_text == (
        "Mrs [FIRST_NAME] [LAST_NAME] (MRN [MEDICAL_RECORD_NUMBER]) was moved to Ward 7B at St Elsewhere Hospital; "
        "card [CREDIT_DEBIT_CARD] on file. Enrolled in [COMPANY_NAME].")
    group = doc.spans["pii"]
    assert group.attrs["sources"] == ["model", "model", "pattern:seh_mrn", "pattern:card", "deny"]
    assert group.attrs["allowed"] == 2


def test_sources_survive_docbin():
    from spacy.tokens import DocBin

    nlp, patterns = pipeline(redact=False, recognizers=["card"])
    doc = nlp(NOTE)
    data = DocBin(docs=[doc], store_user_data=True).to_bytes()
    back = list(DocBin().from_bytes(data).get_docs(nlp.vocab))[0]
    assert table(back) == table(doc)
