"""Operating-point fitting on cached log-probabilities, and the calibration file."""
from __future__ import annotations

import json

import numpy as np
import pytest

from spacy_privfilter.decode import log_softmax
from spacy_privfilter.errors import CheckpointError, ConfigError
from spacy_privfilter.labels import LabelScheme, TransitionBiases
from spacy_privfilter.tokens import get_tokenizer
from spacy_privfilter.training import OperatingPoint, fit_operating_point, read_operating_point, write_operating_point
from spacy_privfilter.training.calibrate import CachedDoc, f_beta, score_spans, span_counts, total
from spacy_privfilter.training.targets import token_targets

from .synthetic import make_docs

SCHEME = LabelScheme.from_classes(("private_email", "private_person"))
CLASSES = list(SCHEME.classes)


def _noised(seed: int, n: int, *, start_penalty: float) -> list[CachedDoc]:
    """Oracle logits (gold tag +3) with unit noise, and span starts made ``start_penalty`` less likely: a model
    that under-detects, which a positive background-to-start bias corrects."""
    tokenizer = get_tokenizer()
    rng = np.random.default_rng(seed)
    starts = np.concatenate([SCHEME.begin_ids, SCHEME.single_ids])
    docs = []
    for doc in make_docs(n, seed=seed):
        tokens = tokenizer.encode(doc.text)
        tags = token_targets(doc.text, tokens, doc.spans, SCHEME).tags
        logits = 3.0 * np.eye(SCHEME.num_labels, dtype=np.float32)[tags]
        logits += rng.standard_normal(logits.shape).astype(np.float32)
        logits[:, starts] -= start_penalty
        docs.append(CachedDoc(doc.text, log_softmax(logits), tokens.char_starts, tokens.char_ends, doc.spans))
    return docs


def _f2(docs: list[CachedDoc], point: OperatingPoint) -> float:
    return f_beta(total(span_counts(score_spans(docs, SCHEME, point.biases, CLASSES), point.label_thresholds)), 2.0)


def test_fitted_biases_improve_f2_on_held_out_documents() -> None:
    fit, held = _noised(0, 60, start_penalty=3.0), _noised(1, 60, start_penalty=3.0)
    point = fit_operating_point(fit, SCHEME, CLASSES, beta=2.0)
    zero = _f2(held, OperatingPoint())
    b = point.biases  # the direction that undoes the penalty: starting a span beats staying outside
    assert b.transition_bias_background_to_start - b.transition_bias_background_stay > 0
    assert _f2(held, point) > zero + 0.1


def test_recall_target_is_reached_at_the_best_precision() -> None:
    fit, held = _noised(2, 60, start_penalty=2.0), _noised(3, 60, start_penalty=2.0)
    point = fit_operating_point(fit, SCHEME, CLASSES, recall_target=0.95)
    assert total(span_counts(score_spans(fit, SCHEME, point.biases, CLASSES), point.label_thresholds)).recall >= 0.95
    assert total(span_counts(score_spans(held, SCHEME, point.biases, CLASSES))).recall > \
        total(span_counts(score_spans(held, SCHEME, TransitionBiases(), CLASSES))).recall


def test_thresholds_drop_low_scoring_false_positives() -> None:
    """Spurious spans scored low and true ones high: an F1 fit keeps the true ones only."""
    docs = _noised(4, 40, start_penalty=-2.5)  # over-detecting model: many short spurious spans
    point = fit_operating_point(docs, SCHEME, CLASSES, beta=1.0, grid=(0.0,))
    assert point.biases == TransitionBiases() and point.label_thresholds
    before = total(span_counts(score_spans(docs, SCHEME, point.biases, CLASSES)))
    after = total(span_counts(score_spans(docs, SCHEME, point.biases, CLASSES), point.label_thresholds))
    assert after.precision > before.precision and after.f1 > before.f1


def test_operating_point_file_round_trip(tmp_path) -> None:
    point = OperatingPoint(TransitionBiases(transition_bias_background_to_start=1.5), {"private_person": 0.4})
    path = write_operating_point(tmp_path, point)
    assert path.name == "viterbi_calibration.json"
    assert read_operating_point(path) == point
    # The checkpoint's own reader (biases only) accepts the file as it is.
    assert TransitionBiases.from_calibration_file(tmp_path) == point.biases
    data = json.loads(path.read_text())
    data["operating_points"]["default"]["label_thresholds"] = {"private_person": 2}
    path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="private_person"):
        read_operating_point(path)


def test_bad_goals_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="beta"):
        fit_operating_point([], SCHEME, CLASSES, beta=0)
    with pytest.raises(ConfigError, match="recall_target"):
        fit_operating_point([], SCHEME, CLASSES, recall_target=1.5)
