"""Gold character spans -> BIOES token targets, and back through the detector's own alignment."""
from __future__ import annotations

import numpy as np
import pytest

from spacy_privfilter.decode import log_softmax
from spacy_privfilter.labels import LabelScheme
from spacy_privfilter.spans import tags_to_char_spans
from spacy_privfilter.tokens import get_tokenizer
from spacy_privfilter.training import GoldSpan, token_targets
from spacy_privfilter.training.targets import chunk_doc, encode_docs

from .synthetic import make_docs

SCHEME = LabelScheme.from_classes(("private_email", "private_person"))


@pytest.fixture(scope="module")
def tokenizer():
    return get_tokenizer()


def _names(tags: np.ndarray) -> list[str]:
    return [SCHEME.id2label[t] for t in tags]


def test_single_and_multi_token_spans(tokenizer) -> None:
    text = "Call Alice Smith or zebra now"
    tokens = tokenizer.encode(text)
    spans = [GoldSpan(5, 16, "private_person"), GoldSpan(20, 25, "private_email")]
    result = token_targets(text, tokens, spans, SCHEME)
    assert _names(result.tags) == ["O", "B-private_person", "E-private_person", "O", "S-private_email", "O"]
    assert (result.misaligned, result.conflicts) == (0, 0)


def test_targets_decode_back_to_the_gold_spans(tokenizer) -> None:
    """The reverse of the detector: confident logits on the targets give exactly the gold spans back."""
    for doc in make_docs(30, seed=5):
        tokens = tokenizer.encode(doc.text)
        tags = token_targets(doc.text, tokens, doc.spans, SCHEME).tags
        log_probs = log_softmax(np.eye(SCHEME.num_labels, dtype=np.float32)[tags] * 20)
        spans = tags_to_char_spans(doc.text, tags, log_probs, tokens.char_starts, tokens.char_ends, SCHEME)
        assert [(s.start, s.end, s.label) for s in spans] == [tuple(g) for g in doc.spans]


def test_misaligned_and_conflicting_spans_are_counted(tokenizer) -> None:
    text = "code 12345678 here"
    tokens = tokenizer.encode(text)  # digits come in groups of up to three
    inside = GoldSpan(6, 8, "private_email")  # starts and ends inside the "123" token
    overlapping = GoldSpan(7, 13, "private_person")  # shares that token
    result = token_targets(text, tokens, [inside, overlapping], SCHEME)
    assert (result.misaligned, result.conflicts) == (1, 1)
    assert _names(result.tags).count("S-private_email") == 1  # still tagged on the token it touches


def test_encode_and_chunk_cover_every_token(tokenizer) -> None:
    docs = make_docs(5, seed=1)
    for encoded in encode_docs(docs, tokenizer, SCHEME):
        pieces = chunk_doc(encoded, 4)
        assert all(len(ids) <= 4 for ids, _ in pieces)
        assert np.array_equal(np.concatenate([t for _, t in pieces]), encoded.tags)
