"""privacy_filter component: every config option, annotations, ents merging, alignment, laziness."""
from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import spacy
from spacy.tokens import Span

from component_fakes import (FixedDetector, ents_of, make_detector, make_nlp, span_at, spans_of)
from spacy_privfilter.pipeline.alignment import AlignmentWarning
from spacy_privfilter.detector import Detector
from spacy_privfilter.pipeline import privacy_filter
from spacy_privfilter.errors import ConfigError
from spacy_privfilter.pipeline.settings import FilterSettings

TEXT = "Hello Jane Doe, mail jane@example.org or call 555 0100."


def fixed(**extra):
    spans = [span_at(TEXT, "Jane", "first_name", 0.95), span_at(TEXT, "Doe", "last_name", 0.55),
             span_at(TEXT, "jane@example.org", "email", 0.75),
             span_at(TEXT, "555 0100", "phone_number", 0.35)]
    return FixedDetector({TEXT: spans}, **extra)


class Recorder:
    """Stands in for privacy_filter.load_detector: records its arguments and builds a fake-backed Detector."""

    def __init__(self):
        self.calls = []

    def __call__(self, model, **kwargs):
        self.calls.append((model, kwargs))
        return make_detector(max_tokens=kwargs["max_tokens"], max_batch_tokens=kwargs["max_batch_tokens"],
                             biases=kwargs.get("biases"))


@pytest.fixture
def recorder(monkeypatch):
    rec = Recorder()
    monkeypatch.setattr(privacy_filter, "load_detector", rec)
    return rec


def test_constructor_is_cheap_and_model_loads_once(recorder):
    nlp = spacy.blank("en")
    nlp.add_pipe("privacy_filter", config={"model": "some/repo", "revision": "v1", "backend": "torch",
                                           "device": "cpu", "dtype": "float32", "max_batch_tokens": 4096})
    assert recorder.calls == []
    nlp(TEXT)
    nlp(TEXT)
    list(nlp.pipe([TEXT] * 3))
    assert len(recorder.calls) == 1
    model, kwargs = recorder.calls[0]
    assert model == "some/repo"
    assert kwargs["revision"] == "v1" and kwargs["backend"] == "torch" and kwargs["device"] == "cpu"
    assert kwargs["dtype"] == "float32" and kwargs["max_batch_tokens"] == 4096
    assert kwargs["max_tokens"] <= 4096
    assert kwargs["biases"] is None


def test_initialize_loads_the_model(recorder):
    nlp = spacy.blank("en")
    nlp.add_pipe("privacy_filter")
    nlp.initialize()
    assert len(recorder.calls) == 1
    nlp(TEXT)
    assert len(recorder.calls) == 1


def test_max_batch_tokens_bounds_every_model_call(recorder):
    nlp = spacy.blank("en")
    component = nlp.add_pipe("privacy_filter", config={"max_batch_tokens": 96})
    docs = list(nlp.pipe([TEXT * 5, TEXT, "x", TEXT * 2] * 3, batch_size=16))
    calls = component.detector.backend.calls
    assert calls and max(batch * seq for batch, seq in calls) <= 96
    assert len(docs) == 12


def test_viterbi_biases_reach_the_decoder(recorder):
    text = "Patient Jane Doe was seen by Dr Amir Patel on the ward; call 555 0100 " * 3
    plain = spacy.blank("en")
    plain.add_pipe("privacy_filter")
    assert len(plain(text).spans["pii"]) > 0
    biased = spacy.blank("en")
    biased.add_pipe("privacy_filter", config={"viterbi_biases": {"transition_bias_background_stay": 1000.0}})
    assert len(biased(text).spans["pii"]) == 0
    assert recorder.calls[-1][1]["biases"] == {"transition_bias_background_stay": 1000.0}


def test_spans_scores_and_attrs():
    nlp = make_nlp(fixed())
    doc = nlp(TEXT)
    group = doc.spans["pii"]
    assert spans_of(doc) == [("first_name", 6, 10), ("last_name", 11, 14), ("email", 21, 37),
                             ("phone_number", 46, 54)]
    np.testing.assert_allclose(group.attrs["scores"], [0.95, 0.55, 0.75, 0.35], rtol=1e-6)
    assert group.attrs["unaligned"] == 0
    assert doc.ents == ()  # set_ents is off by default


def test_spans_key():
    doc = make_nlp(fixed(), spans_key="phi")(TEXT)
    assert "pii" not in doc.spans and len(doc.spans["phi"]) == 4


def test_labels_filter_accepts_class_or_mapped_names():
    doc = make_nlp(fixed(), labels=["email", "PERSON"], label_map={"first_name": "PERSON"})(TEXT)
    assert [label for label, _, _ in spans_of(doc)] == ["PERSON", "email"]
    np.testing.assert_allclose(doc.spans["pii"].attrs["scores"], [0.95, 0.75], rtol=1e-6)


def test_label_map_renames_spans_and_ents():
    doc = make_nlp(fixed(), set_ents=True,
                   label_map={"first_name": "PERSON", "last_name": "PERSON", "email": "EMAIL_ADDRESS"})(TEXT)
    assert [s[0] for s in spans_of(doc)] == ["PERSON", "PERSON", "EMAIL_ADDRESS", "phone_number"]
    assert [s[0] for s in ents_of(doc)] == ["PERSON", "PERSON", "EMAIL_ADDRESS", "phone_number"]


def test_threshold_and_label_thresholds():
    doc = make_nlp(fixed(), threshold=0.5)(TEXT)
    assert [s[0] for s in spans_of(doc)] == ["first_name", "last_name", "email"]
    doc = make_nlp(fixed(), threshold=0.5, label_thresholds={"last_name": 0.9, "phone_number": 0.3})(TEXT)
    assert [s[0] for s in spans_of(doc)] == ["first_name", "email", "phone_number"]
    # A label_map target works as a key too.
    nlp = make_nlp(fixed(), label_map={"email": "EMAIL_ADDRESS"}, label_thresholds={"EMAIL_ADDRESS": 0.8})
    doc = nlp(TEXT)
    assert [s[0] for s in spans_of(doc)] == ["first_name", "last_name", "phone_number"]


def test_the_detector_filters_with_the_component_settings(recorder):
    """Labels and thresholds reach the Detector by model class (label_map targets resolved); the component
    itself writes whatever spans it is given."""
    nlp = spacy.blank("en")
    component = nlp.add_pipe("privacy_filter", config={
        "labels": ["PERSON", "email"], "label_map": {"first_name": "PERSON", "last_name": "PERSON"},
        "threshold": 0.2, "label_thresholds": {"PERSON": 0.6, "last_name": 0.7}})
    span_filter = component.detector.span_filter
    assert span_filter.labels == {"first_name", "last_name", "email"}
    assert span_filter.threshold == 0.2
    assert span_filter.label_thresholds == {"first_name": 0.6, "last_name": 0.7}
    doc = nlp.make_doc(TEXT)
    component.set_annotations([doc], [[span_at(TEXT, "555 0100", "phone_number", 0.01)]])
    assert spans_of(doc) == [("phone_number", 46, 54)]


def test_unknown_label_names_are_config_errors():
    with pytest.raises(ConfigError, match="labels.*'?ssn"):
        make_nlp(fixed(), labels=["ssn"])
    with pytest.raises(ConfigError, match="label_thresholds"):
        make_nlp(fixed(), label_thresholds={"passport": 0.5})


ALIGN_TEXT = "Hi JaneDoe here"


@pytest.mark.parametrize("mode, expected", [
    ("expand", [("first_name", 3, 10)]),
    ("contract", []),
    ("strict", []),
])
def test_alignment_modes(mode, expected):
    detector = FixedDetector({ALIGN_TEXT: [span_at(ALIGN_TEXT, "Jane", "first_name")]})
    nlp = make_nlp(detector, alignment_mode=mode)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        doc = nlp(ALIGN_TEXT)
    assert spans_of(doc) == expected
    assert doc.spans["pii"].attrs["unaligned"] == (0 if expected else 1)
    assert len(doc.spans["pii"].attrs["scores"]) == len(expected)
    messages = [str(w.message) for w in caught if issubclass(w.category, AlignmentWarning)]
    assert len(messages) == (0 if expected else 1)
    for message in messages:
        assert "Jane" not in message and ALIGN_TEXT not in message and "first_name: 1" in message


def test_contract_keeps_whole_tokens_inside():
    text = "Call 555 0100x now"
    detector = FixedDetector({text: [span_at(text, "555 0100", "phone_number")]})
    assert spans_of(make_nlp(detector, alignment_mode="contract")(text)) == [("phone_number", 5, 8)]
    with pytest.warns(AlignmentWarning, match="phone_number: 1"):
        assert spans_of(make_nlp(detector, alignment_mode="strict")(text)) == []
    assert spans_of(make_nlp(detector, alignment_mode="expand")(text)) == [("phone_number", 5, 14)]


def _doc_with_existing_ents(nlp, text, ents):
    doc = nlp.make_doc(text)
    doc.ents = [doc.char_span(s, e, label=label) for label, s, e in ents]
    return doc


@pytest.mark.parametrize("policy, expected", [
    ("prioritize_new", [("ORG", 0, 5), ("first_name", 6, 10), ("last_name", 11, 14), ("email", 21, 37)]),
    ("prioritize_existing", [("ORG", 0, 5), ("PERSON", 6, 14), ("email", 21, 37)]),
    ("replace", [("first_name", 6, 10), ("last_name", 11, 14), ("email", 21, 37)]),
])
def test_ents_policies(policy, expected):
    spans = [span_at(TEXT, "Jane", "first_name"), span_at(TEXT, "Doe", "last_name"),
             span_at(TEXT, "jane@example.org", "email")]
    nlp = make_nlp(FixedDetector({TEXT: spans}), set_ents=True, ents_policy=policy)
    doc = _doc_with_existing_ents(nlp, TEXT, [("ORG", 0, 5), ("PERSON", 6, 14)])
    doc = nlp.get_pipe("privacy_filter")(doc)
    assert ents_of(doc) == expected
    # IOB tags are consistent: every entity token is B or I, everything else O.
    iob = [t.ent_iob_ for t in doc]
    assert all(tag in ("B", "I", "O") for tag in iob)
    assert sum(tag == "B" for tag in iob) == len(expected)
    assert len(doc.spans["pii"]) == 3  # the span group always keeps every detected span


def test_overlapping_new_spans_keep_the_longest_in_ents():
    text = "Hi JaneDoe here"
    spans = [span_at(text, "Jane", "first_name"), span_at(text, "Doe", "last_name"),
             span_at(text, "JaneDoe here", "email")]
    nlp = make_nlp(FixedDetector({text: spans}), set_ents=True)
    doc = nlp(text)
    assert len(doc.spans["pii"]) == 3  # two of them expand to the same token: both kept in the group
    assert ents_of(doc) == [("email", 3, 15)]


def test_set_ents_off_leaves_existing_ents():
    nlp = make_nlp(fixed())
    doc = _doc_with_existing_ents(nlp, TEXT, [("ORG", 0, 5)])
    doc = nlp.get_pipe("privacy_filter")(doc)
    assert ents_of(doc) == [("ORG", 0, 5)]


@pytest.mark.parametrize("key, value", [
    ("model", ""), ("revision", 3), ("backend", "tensorflow"), ("device", ""), ("dtype", "int8"),
    ("spans_key", ""), ("set_ents", "yes"), ("ents_policy", "merge"), ("labels", "email"),
    ("label_map", {"email": ""}), ("threshold", 1.5), ("threshold", -0.1), ("label_thresholds", {"email": 2}),
    ("viterbi_biases", {"transition_bias_nonsense": 1.0}), ("alignment_mode", "loose"),
    ("max_batch_tokens", 0), ("max_batch_tokens", 2.5), ("save_model", "inline"),
])
def test_bad_config_names_the_key(key, value):
    nlp = spacy.blank("en")
    with pytest.raises(Exception) as info:  # spaCy's own validation or our ConfigError, whichever comes first
        nlp.add_pipe("privacy_filter", config={key: value})
    assert key in str(info.value)
    with pytest.raises(ConfigError, match=key):
        FilterSettings(model="m", **{key: value}) if key != "model" else FilterSettings(model=value)


def test_error_messages_hold_no_value_text():
    with pytest.raises(ConfigError) as info:
        FilterSettings(model="m", label_map={"email": 123})
    assert "123" not in str(info.value) and "label_map" in str(info.value)


def test_pickle_round_trip_keeps_behaviour():
    nlp = make_nlp(make_detector(), set_ents=True)
    text = "Send the report to Amir Patel at amir@example.org before Friday."
    clone = pickle.loads(pickle.dumps(nlp))
    assert clone.get_pipe("privacy_filter").name == "privacy_filter"
    component = pickle.loads(pickle.dumps(nlp.get_pipe("privacy_filter")))
    assert component.name == "privacy_filter" and component.settings.set_ents
    assert spans_of(clone(text)) == spans_of(nlp(text))
    assert ents_of(clone(text)) == ents_of(nlp(text))


def test_doc_spans_survive_docbin_with_scores():
    from spacy.tokens import DocBin

    nlp = make_nlp(fixed())
    doc = nlp(TEXT)
    restored = list(DocBin(docs=[doc], store_user_data=True).get_docs(nlp.vocab))[0]
    assert spans_of(restored) == spans_of(doc)
    np.testing.assert_allclose(restored.spans["pii"].attrs["scores"], doc.spans["pii"].attrs["scores"])
    assert isinstance(restored.spans["pii"][0], Span)



def test_model_that_cannot_load_raises_even_with_an_ignoring_error_handler(monkeypatch):
    from spacy_privfilter.errors import ModelNotFoundError

    calls = []

    def fail(model, **kwargs):
        calls.append(model)
        raise ModelNotFoundError("model folder 'missing' does not exist")

    monkeypatch.setattr(privacy_filter, "load_detector", fail)
    nlp = spacy.blank("en")
    nlp.add_pipe("privacy_filter", config={"model": "missing"})
    nlp.set_error_handler(lambda name, proc, docs, exc: None)
    with pytest.raises(ModelNotFoundError):
        list(nlp.pipe(["one", "two", "three"]))
    assert calls == ["missing"]


def test_bad_labels_keep_failing_until_fixed():
    nlp = spacy.blank("en")
    component = nlp.add_pipe("privacy_filter", config={"labels": ["passport"]})
    for _ in range(2):
        with pytest.raises(ConfigError, match="passport"):
            component.detector = fixed()
    assert component._detector is None
