"""Detector: windowing, batching and the text -> CharSpan flow, with the framework-free FakeBackend."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from spacy_privfilter import detector as detector_module
from spacy_privfilter.backends.fake import FakeBackend
from spacy_privfilter.errors import ConfigError
from spacy_privfilter.labels import LabelScheme, TransitionBiases
from spacy_privfilter.spans import CharSpan
from spacy_privfilter.tokens import get_tokenizer

SCHEME = LabelScheme.from_classes(["name", "email", "phone"])
RF = 3  # receptive field of the fakes: 1 layer x window 3
TABLE = np.random.default_rng(5).normal(0, 3, size=(97, SCHEME.num_labels)).astype(np.float32)
TEXTS = [
    "Dear Ana Lopez, call +1 555 0100 or mail ana.lopez@example.com about the visit on Monday.",
    "",
    "   \n\t ",
    "Short.",
    "Patient: Cobb, Clarence. Daughter Christian Curtis can be reached at (944) 418-1283; " * 6,
    "東京都の山田太郎さん 🙂 email taro@example.jp\r\nthanks",
]


def per_token_logits(ids: np.ndarray) -> np.ndarray:
    """Position-independent: each token's logits depend on its own id only."""
    return TABLE[np.asarray(ids) % 97]


def neighbourhood_logits(ids: np.ndarray) -> np.ndarray:
    """Like a banded-attention model: token i's logits depend on ids[i-RF : i+RF+1] (clipped to the input)."""
    ids = np.asarray(ids)
    padded = np.concatenate([np.zeros(RF, dtype=np.int64), ids + 1, np.zeros(RF, dtype=np.int64)])
    sums = np.array([padded[i: i + 2 * RF + 1] @ np.arange(1, 2 * RF + 2) for i in range(len(ids))])
    return TABLE[sums % 97]


def make_backend(logits_fn=per_token_logits):
    return FakeBackend(SCHEME.id2label, logits_fn=logits_fn, num_hidden_layers=1, sliding_window=RF)


def test_windowed_equals_unwindowed():
    for fn in (per_token_logits, neighbourhood_logits):
        whole = detector_module.Detector(make_backend(fn), max_tokens=4096, max_batch_tokens=4096)
        for max_tokens in (2 * RF + 1, 10, 17):
            backend = make_backend(fn)
            windowed = detector_module.Detector(backend, max_tokens=max_tokens, max_batch_tokens=64)
            for text in TEXTS:
                assert windowed.detect(text) == whole.detect(text)
            assert max(seq for _, seq in backend.calls) <= max_tokens


def test_windowed_logits_equal_unwindowed_logits():
    tokenizer = get_tokenizer()
    ids = tokenizer.encode(TEXTS[4]).input_ids
    expected = neighbourhood_logits(ids)
    got = detector_module.Detector(make_backend(neighbourhood_logits), max_tokens=9,
                                   max_batch_tokens=40).document_logits([ids])[0]
    np.testing.assert_array_equal(got, expected)
    # A margin one token short would differ: the test can tell.
    short = detector_module.Detector(make_backend(neighbourhood_logits), max_tokens=9, max_batch_tokens=40)
    short.margin = RF - 1
    assert not np.array_equal(short.document_logits([ids])[0], expected)


def test_batch_equals_one_by_one_and_respects_budget():
    backend = make_backend()
    detector = detector_module.Detector(backend, max_tokens=12, max_batch_tokens=40)
    singles = [detector.detect(t) for t in TEXTS]
    backend.calls.clear()
    batched = detector.detect_batch(TEXTS)
    assert batched == singles
    assert any(spans for spans in batched)
    assert all(batch * seq <= 40 and seq <= 12 for batch, seq in backend.calls)
    assert any(batch > 1 for batch, _ in backend.calls)
    # Order is the input order: reversing the input reverses the output.
    assert detector.detect_batch(TEXTS[::-1]) == batched[::-1]


def test_empty_and_whitespace_texts_skip_the_model():
    backend = make_backend()
    detector = detector_module.Detector(backend)
    assert detector.detect_batch(["", " ", "\n\t"]) == [[], [], []]
    assert backend.calls == []


def test_oracle_table_gives_exact_spans():
    text = "Contact Ana Lopez at ana@example.com today."
    gold = [("name", 8, 17), ("email", 21, 36)]
    tokenized = get_tokenizer().encode(text)
    logits = np.zeros((len(tokenized), SCHEME.num_labels), dtype=np.float32)
    logits[:, SCHEME.outside_id] = 10.0
    ids = SCHEME.label2id
    for label, start, end in gold:
        toks = np.nonzero((tokenized.char_starts < end) & (tokenized.char_ends > start))[0]
        names = ["S"] if len(toks) == 1 else ["B"] + ["I"] * (len(toks) - 2) + ["E"]
        for t, prefix in zip(toks, names):
            logits[t, ids[f"{prefix}-{label}"]] = 20.0
    backend = FakeBackend(SCHEME.id2label, table={tuple(tokenized.input_ids.tolist()): logits})
    spans = detector_module.Detector(backend).detect(text)
    assert [(s.label, s.start, s.end) for s in spans] == gold
    assert all(isinstance(s, CharSpan) and s.score > 0.99 for s in spans)
    assert detector_module.Detector(backend, label_thresholds={"email": 1.0}).detect(text)[0].label == "name"
    assert [s.label for s in detector_module.Detector(backend, labels=["email"]).detect(text)] == ["email"]
    # filtered(): the same model and tokenizer with another filter; the original keeps its own.
    detector = detector_module.Detector(backend)
    only_names = detector.filtered(labels=["name"], threshold=0.5)
    assert [s.label for s in only_names.detect(text)] == ["name"] and only_names.backend is backend
    assert [s.label for s in only_names.filtered().detect(text)] == ["name", "email"]
    assert [s.label for s in detector.detect(text)] == ["name", "email"]
    with pytest.raises(ConfigError, match="unknown classes: ssn"):
        detector.filtered(labels=["ssn"])


def test_biases_come_from_backend_unless_given():
    backend = make_backend()
    backend.viterbi_biases = {"transition_bias_inside_to_continue": 2.0}
    assert detector_module.Detector(backend).biases.transition_bias_inside_to_continue == 2.0
    given = TransitionBiases(transition_bias_end_to_start=-1.0)
    assert detector_module.Detector(backend, biases=given).biases == given
    # The biases reach the decoder: a huge reward for O -> O makes the all-O path win.
    assert detector_module.Detector(make_backend()).detect(TEXTS[0]) != []
    quiet = detector_module.Detector(make_backend(), biases={"transition_bias_background_stay": 1000.0})
    assert quiet.detect(TEXTS[0]) == []


@pytest.mark.parametrize("options, fragment", [
    ({"max_tokens": 2 * RF}, "max_tokens"),
    ({"max_tokens": 100, "max_batch_tokens": 50}, "max_batch_tokens"),
    ({"threshold": 1.5}, "threshold"),
    ({"threshold": True}, "threshold"),
    ({"label_thresholds": {"nope": 0.5}}, "email"),
    ({"label_thresholds": {"name": -0.1}}, "label_thresholds"),
    ({"biases": {"bogus": 1.0}}, "transition_bias_background_stay"),
])
def test_option_validation(options, fragment):
    with pytest.raises(ConfigError, match=fragment):
        detector_module.Detector(make_backend(), **options)


def test_from_pretrained_wires_loader_options(monkeypatch, tmp_path):
    seen = {}

    def fake_load_backend(model, **kwargs):
        seen.update(kwargs, model=model)
        backend = make_backend()
        backend.model_path = tmp_path  # a model folder without its own tokenizer file
        return backend

    import spacy_privfilter.backends as backends

    monkeypatch.setattr(backends, "load_backend", fake_load_backend)
    detector = detector_module.Detector.from_pretrained(str(tmp_path), backend="torch", dtype="float32",
                                                        quantize=8, threshold=0.5, max_tokens=64)
    assert seen == {"model": str(tmp_path), "revision": None, "backend": "torch", "device": "auto",
                    "dtype": "float32", "quantize": 8}
    assert detector.threshold == 0.5 and detector.max_tokens == 64
    assert detector.tokenizer is get_tokenizer()
    shipped = Path(__file__).resolve().parents[2] / "shared" / "tokenizers" / "o200k_base.tiktoken"
    if shipped.is_file():  # a tokenizer file in the model folder is the one used
        os.symlink(shipped, tmp_path / "o200k_base.tiktoken")
        with_file = detector_module.Detector.from_pretrained(str(tmp_path))
        assert with_file.tokenizer is get_tokenizer(shipped) and with_file.tokenizer is not get_tokenizer()
    with pytest.raises(ConfigError, match="max_tokens"):
        detector_module.Detector.from_pretrained(str(tmp_path), max_token=64)
