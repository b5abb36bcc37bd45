"""Helpers for the privacy_filter component tests: fake detectors and a pipeline builder.

Module-level functions only (no lambdas or closures), so pipelines that hold them can be pickled for
``nlp.pipe(n_process=2)``.
"""
from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np
import spacy

from spacy_privfilter.backends.fake import FakeBackend
from spacy_privfilter.detector import Detector
from spacy_privfilter.labels import LabelScheme
from spacy_privfilter.spans import CharSpan, SpanFilter
from spacy_privfilter.testing import bioes_labels

CLASSES = ("first_name", "last_name", "email", "phone_number")
ID2LABEL = bioes_labels(CLASSES)
SCHEME = LabelScheme.from_id2label(ID2LABEL)
# Random per-token logits: token i's logits depend on its own id only, so windows cannot change them and
# spans appear at arbitrary places (a tough test of batching, ordering and windowing).
TABLE = np.random.default_rng(7).normal(0.0, 3.0, size=(101, len(ID2LABEL))).astype(np.float32)
TABLE[:, 0] += 2.0  # mostly O, as in real text


def per_token_logits(ids: np.ndarray) -> np.ndarray:
    return TABLE[np.asarray(ids) % 101]


def make_detector(*, max_tokens: int = 64, max_batch_tokens: int = 512, biases=None) -> Detector:
    """A real Detector over a FakeBackend with receptive field 1 x 4 tokens (so windows stay small)."""
    backend = FakeBackend(ID2LABEL, logits_fn=per_token_logits, num_hidden_layers=1, sliding_window=4)
    return Detector(backend, max_tokens=max_tokens, max_batch_tokens=max_batch_tokens, biases=biases)


class FixedDetector:
    """Gives fixed CharSpans per text (none for others) through the real ``SpanFilter``, as a Detector does;
    counts calls; raises for texts in ``fail``."""

    def __init__(self, spans_by_text: dict[str, Sequence[CharSpan]] | None = None, *,
                 fail: Sequence[str] = (), classes: Sequence[str] = CLASSES) -> None:
        self.spans_by_text = dict(spans_by_text or {})
        self.fail = set(fail)
        self.scheme = LabelScheme.from_classes(classes)
        self.batches: list[int] = []
        self.span_filter = SpanFilter()

    def filtered(self, **options: Any) -> "FixedDetector":
        other = copy.copy(self)  # shares ``batches``, as Detector.filtered shares the model
        other.span_filter = SpanFilter.checked(self.scheme.classes, **options)
        return other

    def detect_batch(self, texts: Sequence[str]) -> list[list[CharSpan]]:
        texts = list(texts)
        self.batches.append(len(texts))
        if self.fail.intersection(texts):
            raise RuntimeError(f"fake failure in a batch of {len(texts)} texts")
        return [self.span_filter.apply(self.spans_by_text.get(text, ())) for text in texts]


def span_at(text: str, piece: str, label: str, score: float = 0.9) -> CharSpan:
    start = text.index(piece)
    return CharSpan(label, start, start + len(piece), score)


def make_nlp(detector=None, **config) -> spacy.language.Language:
    """A blank English pipeline with ``privacy_filter`` (config overrides) and an injected detector."""
    nlp = spacy.blank("en")
    component = nlp.add_pipe("privacy_filter", config=config)
    component.detector = detector if detector is not None else make_detector()
    return nlp


def spans_of(doc, key: str = "pii") -> list[tuple[str, int, int]]:
    return [(span.label_, span.start_char, span.end_char) for span in doc.spans[key]]


def ents_of(doc) -> list[tuple[str, int, int]]:
    return [(span.label_, span.start_char, span.end_char) for span in doc.ents]
