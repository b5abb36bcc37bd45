"""The ``privacy_redactor`` component and the ``redact()`` one-liner (spans placed directly or by a fake detector)."""
import os
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
import spacy
from spacy.language import Language
from spacy.tokens import Doc, DocBin

import spacy_privfilter
from spacy_privfilter.errors import ConfigError
from spacy_privfilter.redaction.redactor import restore
from spacy_privfilter.api import redact
from spacy_privfilter.pipeline.privacy_redactor import PrivacyRedactor

TEXT = "Patient Jane Doe, MRN 483920, call 555-201-7731. Jane agreed."
PII = [("first_name", "Jane"), ("last_name", "Doe"), ("medical_record_number", "483920"),
       ("phone_number", "555-201-7731")]
ORIGINALS = ["Jane", "Doe", "483920", "555-201-7731"]


def pii_spans(text: str):
    """(label, start, end) of every occurrence of the PII values in ``text``."""
    found = []
    for label, value in PII:
        start = text.find(value)
        while start != -1:
            found.append((label, start, start + len(value)))
            start = text.find(value, start + 1)
    return sorted(found, key=lambda s: s[1])


def gold_doc(nlp, text: str = TEXT, key: str = "pii") -> Doc:
    doc = nlp.make_doc(text)
    doc.spans[key] = [doc.char_span(start, end, label) for label, start, end in pii_spans(text)]
    return doc


@Language.component("test_pii_finder")
def pii_finder(doc: Doc) -> Doc:
    """A stand-in detector: marks the known PII values (module-level, so it pickles for n_process)."""
    doc.spans["pii"] = [doc.char_span(start, end, label) for label, start, end in pii_spans(doc.text)]
    return doc


def finder_nlp(hash_key=None, seed=None, **redactor_config) -> Language:
    """Secrets come from environment variables: a pipeline config refuses them (config.cfg keeps it in clear)."""
    nlp = spacy.blank("en")
    nlp.add_pipe("test_pii_finder")
    secrets = {name: str(value) for name, value in (("TEST_HASH_KEY", hash_key), ("TEST_SEED", seed)) if value}
    with mock.patch.dict(os.environ, secrets):
        nlp.add_pipe("privacy_redactor", config={"hash_key_env": "TEST_HASH_KEY", "seed_env": "TEST_SEED",
                                                 **redactor_config})
    return nlp


def all_values(obj):
    """Every string anywhere inside nested dicts/lists/tuples (keys included)."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from all_values(key)
            yield from all_values(value)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from all_values(item)


def test_entry_point_in_a_fresh_process():
    code = ("import spacy; nlp = spacy.blank('en'); nlp.add_pipe('privacy_redactor'); "
            "doc = nlp.make_doc('Call Jane'); doc.spans['pii'] = [doc.char_span(5, 9, 'first_name')]; "
            "print(nlp.get_pipe('privacy_redactor')(doc)._.redacted_text)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "Call [FIRST_NAME]"


def test_component_writes_text_records_and_no_mapping():
    nlp = finder_nlp(style="tag", tag_format="[{LABEL}_{n}]")
    doc = nlp(TEXT)
    assert doc._.redacted_text == ("Patient [FIRST_NAME_1] [LAST_NAME_1], MRN [MEDICAL_RECORD_NUMBER_1], "
                                   "call [PHONE_NUMBER_1]. [FIRST_NAME_1] agreed.")
    assert doc._.redaction_mapping is None
    for record in doc._.redactions:
        assert type(record) is dict and all(type(v) in (int, str) for v in record.values())
        assert doc._.redacted_text[record["redacted_start"]:record["redacted_end"]] == record["replacement"]


@pytest.mark.parametrize("style", ["tag", "mask", "hash", "surrogate", "remove"])
def test_no_original_kept_on_the_doc_without_keep_mapping(style):
    nlp = finder_nlp(style=style, hash_key="k" * 16, seed=5)
    doc = nlp(TEXT)
    stored = list(all_values(list(doc.user_data.items())))
    assert stored  # the extensions are there...
    assert not [value for value in ORIGINALS if any(value in s for s in stored)]  # ...without any original
    data = DocBin(store_user_data=True, docs=[doc]).to_bytes()
    restored = list(DocBin().from_bytes(data).get_docs(nlp.vocab))[0]
    assert not [value for value in ORIGINALS if any(value in s for s in all_values(list(restored.user_data.items())))]


def test_keep_mapping_survives_docbin_and_restores():
    nlp = finder_nlp(style="surrogate", keep_mapping=True, seed="s")
    doc = nlp(TEXT)
    assert sorted(doc._.redaction_mapping.values()) == sorted(ORIGINALS)
    data = DocBin(store_user_data=True, docs=[doc]).to_bytes()
    back = list(DocBin().from_bytes(data).get_docs(nlp.vocab))[0]
    assert back._.redacted_text == doc._.redacted_text
    assert [dict(r) for r in back._.redactions] == doc._.redactions
    assert restore(back._.redacted_text, back._.redactions) == TEXT
    assert restore(back._.redacted_text, back._.redaction_mapping) == TEXT
    assert Doc(nlp.vocab).from_bytes(doc.to_bytes())._.redacted_text == doc._.redacted_text


def test_saved_pipeline_loads_with_the_same_settings(tmp_path):
    nlp = spacy.blank("en")
    nlp.add_pipe("privacy_redactor", config={"style": "mask", "keep_last": 2, "label_styles": {"first_name": "tag"}})
    nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    redactor = loaded.get_pipe("privacy_redactor")
    assert redactor.config == nlp.get_pipe("privacy_redactor").config
    assert redactor(gold_doc(loaded))._.redacted_text == \
        "Patient [FIRST_NAME] *oe, MRN ****20, call ***-***-**31. [FIRST_NAME] agreed."


def test_error_handler_sees_a_doc_without_spans():
    nlp = spacy.blank("en")
    nlp.add_pipe("privacy_redactor")
    failed = []
    nlp.set_error_handler(lambda name, component, docs, exc: failed.append((name, len(docs))))
    docs = list(nlp.pipe(["no group here", "nor here"]))
    assert failed == [("privacy_redactor", 1), ("privacy_redactor", 1)]
    assert all(doc._.redacted_text is None for doc in docs)


def test_n_process_gives_the_same_results():
    nlp = finder_nlp(style="hash", hash_key="k" * 16)
    texts = [TEXT, "nothing here", "Jane only", TEXT.upper()]
    single = [(d._.redacted_text, d._.redactions) for d in nlp.pipe(texts)]
    multi = [(d._.redacted_text, [dict(r) for r in d._.redactions]) for d in nlp.pipe(texts, n_process=2,
                                                                                       batch_size=1)]
    assert multi == single
    assert single[0][0] != TEXT


def test_overlaps_use_scores_from_the_span_group():
    nlp = spacy.blank("en")
    redactor = nlp.add_pipe("privacy_redactor")
    doc = nlp.make_doc("Dr Jane Doe here")
    doc.spans["pii"] = [doc.char_span(3, 7, "first_name"), doc.char_span(3, 11, "person")]
    doc.spans["pii"].attrs["scores"] = np.asarray([0.9, 0.4], dtype=np.float32)
    assert redactor(doc)._.redacted_text == "Dr [FIRST_NAME] here"
    doc.spans["pii"].attrs["scores"] = np.asarray([0.3, 0.4], dtype=np.float32)
    assert redactor(doc)._.redacted_text == "Dr [PERSON] here"


def test_custom_spans_key_and_label_styles():
    nlp = spacy.blank("en")
    redactor = nlp.add_pipe("privacy_redactor", config={"spans_key": "phi", "style": "mask",
                                                        "label_styles": {"first_name": "remove"}, "keep_last": 2})
    doc = redactor(gold_doc(nlp, key="phi"))
    assert doc._.redacted_text == "Patient  *oe, MRN ****20, call ***-***-**31.  agreed."


def test_missing_span_group_fails_closed_without_text():
    nlp = spacy.blank("en")
    redactor = nlp.add_pipe("privacy_redactor")
    with pytest.raises(ValueError, match="'pii'") as info:
        redactor(nlp.make_doc(TEXT))
    assert "Jane" not in str(info.value)


@pytest.mark.parametrize("config,key", [({"style": "blank"}, "style"), ({"label_styles": {"email": "x"}}, "email"),
                                        ({"keep_last": -2}, "keep_last"), ({"mask_char": ""}, "mask_char"),
                                        ({"tag_format": "[{name}]"}, "tag_format"), ({"spans_key": ""}, "spans_key"),
                                        ({"hash_length": 100}, "hash_length"), ({"locale": ""}, "locale")])
def test_config_errors_name_the_key(config, key):
    with pytest.raises(Exception, match=key) as info:
        spacy.blank("en").add_pipe("privacy_redactor", config=config)
    assert "privacy_redactor" in str(info.value)


def test_hash_without_key_is_refused(monkeypatch):
    monkeypatch.delenv("PRIVFILTER_HASH_KEY", raising=False)
    with pytest.raises(ConfigError, match="hash_key_env"):
        spacy.blank("en").add_pipe("privacy_redactor", config={"style": "hash"})
    monkeypatch.setenv("MY_KEY", "secret-0123456789")
    nlp = spacy.blank("en")
    redactor = nlp.add_pipe("privacy_redactor", config={"style": "hash", "hash_key_env": "MY_KEY"})
    assert redactor(gold_doc(nlp))._.redactions[0]["replacement"] != "Jane"


def test_extensions_are_registered_once():
    first = PrivacyRedactor(None)
    second = PrivacyRedactor(None, style="mask")
    assert first is not second
    assert all(Doc.has_extension(name) for name in ("redacted_text", "redactions", "redaction_mapping"))


def test_one_liner_with_a_given_nlp():
    nlp = spacy.blank("en")
    nlp.add_pipe("test_pii_finder")
    assert redact(TEXT, nlp=nlp) == "Patient [FIRST_NAME] [LAST_NAME], MRN [MEDICAL_RECORD_NUMBER], call " \
                                    "[PHONE_NUMBER]. [FIRST_NAME] agreed."
    masked = redact([TEXT, "no pii"], nlp=nlp, style="mask", keep_last=4)
    assert masked == ["Patient **** ***, MRN **3920, call ***-***-7731. **** agreed.", "no pii"]
    with pytest.raises(TypeError):
        redact(42, nlp=nlp)
    with pytest.raises(TypeError):
        redact(["ok", None], nlp=nlp)


def test_end_to_end_with_privacy_filter_and_a_fake_detector():
    component_fakes = pytest.importorskip("component_fakes")
    detector = component_fakes.FixedDetector({TEXT: [component_fakes.span_at(TEXT, "Jane", "first_name", 0.8),
                                                     component_fakes.span_at(TEXT, "555-201-7731", "phone_number")]})
    nlp = component_fakes.make_nlp(detector)
    nlp.add_pipe("privacy_redactor", config={"style": "tag"})
    assert nlp(TEXT)._.redacted_text == "Patient [FIRST_NAME] Doe, MRN 483920, call [PHONE_NUMBER]. Jane agreed."
    assert redact(TEXT, nlp=nlp, style="remove") == "Patient  Doe, MRN 483920, call . Jane agreed."


def test_package_level_redact_stays_a_function():
    import spacy_privfilter.redaction.redactor as _  # noqa: F401  (importing the submodule must not replace the function)

    assert spacy_privfilter.redact is redact

    nlp = spacy.blank("en")
    nlp.add_pipe("test_pii_finder")
    assert spacy_privfilter.redact("Jane", nlp=nlp) == "[FIRST_NAME]"


def test_one_liner_builds_a_privacy_filter_pipeline_for_the_model(tmp_path):
    from spacy_privfilter.errors import ModelNotFoundError

    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelNotFoundError) as info:
        redact("Call Jane", model=str(missing))
    assert "Jane" not in str(info.value)


@pytest.mark.slow
def test_one_liner_end_to_end_on_a_tiny_checkpoint(tiny_checkpoint):
    pytest.importorskip("torch")
    from spacy_privfilter.api import _pipeline
    from spacy_privfilter.testing import NEMOTRON_CLASSES

    model = str(tiny_checkpoint(NEMOTRON_CLASSES, classifier_scale=10.0))
    first = redact(TEXT, model=model, backend="torch", style="mask")
    misses = _pipeline.cache_info().misses
    texts = redact([TEXT, "second text"], model=model, backend="torch", style="mask")
    assert _pipeline.cache_info().misses == misses  # the model pipeline was reused, not rebuilt
    assert texts[0] == first and len(first) == len(TEXT)  # mask keeps the length; random weights find "PII"
    assert first != TEXT
