"""The ``redact()`` one-liner: typed overloads, the model-pipeline cache, and secrets applied per call."""
from __future__ import annotations

import importlib.util
import inspect
import typing

import pytest

import spacy_privfilter
from component_fakes import FixedDetector, span_at
from spacy_privfilter.api import _pipeline, redact
from spacy_privfilter.pipeline import privacy_filter
from spacy_privfilter.redaction.values import hash_value

TEXT = "Call Jane at 555-201-7731."


@pytest.fixture
def fake_model(monkeypatch):
    """Every privacy_filter pipeline loads a fixed detector; the pipeline cache starts empty."""
    spans = {TEXT: [span_at(TEXT, "Jane", "first_name"), span_at(TEXT, "555-201-7731", "phone_number")]}
    monkeypatch.setattr(privacy_filter, "load_detector", lambda model, **options: FixedDetector(spans))
    _pipeline.cache_clear()
    yield
    _pipeline.cache_clear()


def test_typed_overloads_str_and_iterable():
    from spacy.language import Language  # named only for type checkers in api.py

    overloads = typing.get_overloads(redact)
    hints = [typing.get_type_hints(f, localns={"Language": Language}) for f in overloads]
    assert [(h["text_or_texts"], h["return"]) for h in hints] == [(str, str),
                                                                  (typing.Iterable[str], list[str])]


def test_one_function_no_module_of_that_name():
    assert spacy_privfilter.redact is redact and inspect.isfunction(spacy_privfilter.redact)
    assert importlib.util.find_spec("spacy_privfilter.redact") is None


def test_secrets_apply_per_call_and_are_never_cache_keys(fake_model):
    assert not {"hash_key", "seed"} & set(inspect.signature(_pipeline.__wrapped__).parameters)
    first = redact(TEXT, model="some/model", style="hash", hash_key="key-one")
    second = redact(TEXT, model="some/model", style="hash", hash_key="key-two")
    assert first == f"Call {hash_value('Jane', key=b'key-one')} at {hash_value('555-201-7731', key=b'key-one')}."
    assert second == f"Call {hash_value('Jane', key=b'key-two')} at {hash_value('555-201-7731', key=b'key-two')}."
    seeded = [redact(TEXT, model="some/model", style="surrogate", seed=seed) for seed in (1, 1, 2)]
    assert seeded[0] == seeded[1] != seeded[2] and "Jane" not in seeded[0]
    info = _pipeline.cache_info()
    assert (info.misses, info.hits) == (1, 4)  # one model pipeline, whatever the keys and seeds
    assert redact([TEXT, "nothing here"], model="some/model", style="mask") == \
        ["Call **** at ***-***-****.", "nothing here"]
    redact(TEXT, model="other/model")
    assert _pipeline.cache_info().misses == 2


def test_bad_inputs_are_type_errors_before_any_model(fake_model):
    for bad in (42, ["ok", None]):
        with pytest.raises(TypeError):
            redact(bad, model="some/model")
    with pytest.raises(ValueError, match="lone surrogates"):
        redact("bad \ud800 text", model="some/model")
    assert _pipeline.cache_info().misses == 0
