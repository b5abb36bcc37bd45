"""Fit an operating point (six Viterbi transition biases, per-class thresholds) on labelled data.

The model runs once over the data and its log-probabilities are cached; every candidate operating point is
then only a Viterbi pass over the cache. Biases are fitted by coordinate search over a grid, maximising
exact-match span F-beta (beta 2 by default: a missed name leaks, a spurious one only costs a redaction) or,
with a recall target, the precision among points that reach it. Thresholds are then fitted per class on the
fixed decoder's span scores. The data is split (by text hash, deterministically) into a part that is fitted
and a held-out part on which before/after P/R/F are reported.

Only classes that the data annotates are scored: a prediction of a class that never occurs in the gold
spans is left out (the data set may simply not annotate it), as ``evaluate --ignore-unannotated-labels``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from ..decode import log_softmax, viterbi
from ..errors import ConfigError
from ..evaluate import PRF
from ..labels import BIAS_KEYS, LabelScheme, TransitionBiases
from ..spans import tags_to_char_spans
from .data import GoldSpan, LabelledDoc, check_classes, data_classes, split_examples
from .operating_point import OperatingPoint

logger = logging.getLogger(__name__)

BIAS_GRID = (-3.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0)
DOCS_PER_MODEL_CALL = 64


class CachedDoc(NamedTuple):
    """A labelled document with the model's per-token log-probabilities ([T, C]) and token offsets ([T])."""

    text: str
    log_probs: np.ndarray
    char_starts: np.ndarray
    char_ends: np.ndarray
    gold: tuple[GoldSpan, ...]


class ScoredSpans(NamedTuple):
    """Per class: predicted span scores, whether each is an exact gold match, and the gold count."""

    scores: dict[str, np.ndarray]
    matched: dict[str, np.ndarray]
    n_gold: dict[str, int]


def cache_logits(detector: Any, docs: Sequence[LabelledDoc]) -> list[CachedDoc]:
    """Run ``detector``'s model once over ``docs`` (windowed and batched as in detection)."""
    cached: list[CachedDoc] = []
    num_labels = detector.scheme.num_labels
    for i in range(0, len(docs), DOCS_PER_MODEL_CALL):
        group = docs[i:i + DOCS_PER_MODEL_CALL]
        tokens = [detector.tokenizer.encode(d.text) for d in group]
        logits = detector.document_logits([t.input_ids if len(t) else None for t in tokens])
        for doc, tok, doc_logits in zip(group, tokens, logits):
            log_probs = log_softmax(doc_logits) if doc_logits is not None else np.zeros((0, num_labels), np.float32)
            cached.append(CachedDoc(doc.text, log_probs, tok.char_starts, tok.char_ends, doc.spans))
    return cached


def score_spans(docs: Sequence[CachedDoc], scheme: LabelScheme, biases: TransitionBiases,
                classes: Sequence[str]) -> ScoredSpans:
    """Decode every document with ``biases`` and match its spans (no threshold) against the gold, per class."""
    wanted = set(classes)
    scores: dict[str, list[float]] = {c: [] for c in classes}
    matched: dict[str, list[bool]] = {c: [] for c in classes}
    n_gold = {c: 0 for c in classes}
    for doc in docs:
        gold = {(s.start, s.end, s.label) for s in doc.gold}
        for _, _, label in gold:
            if label in n_gold:
                n_gold[label] += 1
        if not doc.log_probs.shape[0]:
            continue
        tags = viterbi(doc.log_probs, scheme, biases)
        for span in tags_to_char_spans(doc.text, tags, doc.log_probs, doc.char_starts, doc.char_ends, scheme):
            if span.label in wanted:
                scores[span.label].append(span.score)
                matched[span.label].append((span.start, span.end, span.label) in gold)
    return ScoredSpans({c: np.asarray(v, dtype=np.float64) for c, v in scores.items()},
                       {c: np.asarray(v, dtype=bool) for c, v in matched.items()}, n_gold)


def span_counts(scored: ScoredSpans, thresholds: Mapping[str, float] | None = None) -> dict[str, PRF]:
    """Exact-match counts per class after dropping spans below each class's threshold."""
    out = {}
    for label, scores in scored.scores.items():
        keep = scores >= (thresholds or {}).get(label, 0.0)
        hits = int(scored.matched[label][keep].sum())
        out[label] = PRF(int(keep.sum()), scored.n_gold[label], hits, hits)
    return out


def total(counts: Mapping[str, PRF]) -> PRF:
    out = PRF()
    for prf in counts.values():
        out += prf
    return out


def f_beta(prf: PRF, beta: float) -> float:
    p, r = prf.precision, prf.recall
    return (1 + beta * beta) * p * r / (beta * beta * p + r) if p + r else 0.0


def objective(prf: PRF, *, beta: float, recall_target: float | None) -> tuple[float, ...]:
    """Larger is better: F-beta; or, with a recall target, best precision once recall reaches the target."""
    if recall_target is None:
        return (f_beta(prf, beta),)
    reached = prf.recall >= recall_target
    return (float(reached), prf.precision if reached else prf.recall, prf.recall)


def fit_biases(docs: Sequence[CachedDoc], scheme: LabelScheme, classes: Sequence[str], *, beta: float = 2.0,
               recall_target: float | None = None, start: TransitionBiases | None = None,
               grid: Sequence[float] = BIAS_GRID, rounds: int = 2) -> TransitionBiases:
    """Coordinate search: each bias in turn takes the grid value that most improves the objective."""
    current = (start or TransitionBiases()).as_dict()
    best = objective(total(span_counts(score_spans(docs, scheme, TransitionBiases(**current), classes))),
                     beta=beta, recall_target=recall_target)
    ordered = sorted(grid, key=abs)  # among equally good values the smallest bias wins (strict improvement)
    for _ in range(rounds):
        improved = False
        for key in BIAS_KEYS:
            for value in ordered:
                if value == current[key]:
                    continue
                candidate = {**current, key: float(value)}
                score = objective(total(span_counts(score_spans(docs, scheme, TransitionBiases(**candidate),
                                                                classes))), beta=beta, recall_target=recall_target)
                if score > best:
                    best, current, improved = score, candidate, True
        if not improved:
            break
    return TransitionBiases(**current)


def fit_thresholds(scored: ScoredSpans, *, beta: float = 2.0, recall_target: float | None = None) -> dict[str, float]:
    """Per class, the lowest span-score threshold with the best objective on that class (0 = none, left out)."""
    thresholds = {}
    for label, scores in scored.scores.items():
        best_value, best = 0.0, None
        for value in [0.0, *np.unique(scores).tolist()]:
            score = objective(span_counts(scored, {label: value})[label], beta=beta, recall_target=recall_target)
            if best is None or score > best:
                best_value, best = value, score
        if best_value > 0:
            thresholds[label] = float(best_value)
    return thresholds


def fit_operating_point(docs: Sequence[CachedDoc], scheme: LabelScheme, classes: Sequence[str], *,
                        beta: float = 2.0, recall_target: float | None = None,
                        start: TransitionBiases | None = None, grid: Sequence[float] = BIAS_GRID,
                        rounds: int = 2) -> OperatingPoint:
    """Biases, then per-class thresholds, fitted on ``docs`` (see the module docstring)."""
    _check_goal(beta, recall_target)
    biases = fit_biases(docs, scheme, classes, beta=beta, recall_target=recall_target, start=start, grid=grid,
                        rounds=rounds)
    thresholds = fit_thresholds(score_spans(docs, scheme, biases, classes), beta=beta, recall_target=recall_target)
    return OperatingPoint(biases, thresholds)


@dataclass(frozen=True)
class CalibrationReport:
    """The fitted operating point and exact-match counts per class on the held-out part, before and after."""

    operating_point: OperatingPoint
    before: Mapping[str, PRF]
    after: Mapping[str, PRF]
    beta: float
    recall_target: float | None
    n_fit: int
    n_heldout: int
    extra: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        def table(counts: Mapping[str, PRF]) -> dict[str, Any]:
            rows = {k: {**v.as_dict(), "f_beta": f_beta(v, self.beta)} for k, v in sorted(counts.items())}
            overall = total(counts)
            return {"overall": {**overall.as_dict(), "f_beta": f_beta(overall, self.beta)}, "per_label": rows}
        return {"beta": self.beta, "recall_target": self.recall_target, "n_fit_docs": self.n_fit,
                "n_heldout_docs": self.n_heldout, **self.operating_point.as_calibration(),
                "heldout_before": table(self.before), "heldout_after": table(self.after)}

    def format_table(self) -> str:
        """Held-out P/R/F-beta per class, before -> after (exact span match)."""
        name = f"F{self.beta:g}"
        rows = [(k, self.before[k], self.after[k]) for k in sorted(self.after)]
        rows.append(("overall", total(self.before), total(self.after)))
        width = max([len(r[0]) for r in rows] + [5])
        head = f"{'label':<{width}}  {'P before':>8} {'R':>6} {name:>6}   {'P after':>8} {'R':>6} {name:>6}  {'gold':>6}"
        lines = [f"held-out documents: {self.n_heldout} (fitted on {self.n_fit})", head, "-" * len(head)]
        for label, b, a in rows:
            lines.append(f"{label:<{width}}  {b.precision:8.3f} {b.recall:6.3f} {f_beta(b, self.beta):6.3f}   "
                         f"{a.precision:8.3f} {a.recall:6.3f} {f_beta(a, self.beta):6.3f}  {a.n_gold:6d}")
        return "\n".join(lines)


def calibrate(detector: Any, docs: Sequence[LabelledDoc], *, beta: float = 2.0, recall_target: float | None = None,
              heldout_fraction: float = 0.25, grid: Sequence[float] = BIAS_GRID, rounds: int = 2) -> CalibrationReport:
    """Fit an operating point for ``detector`` (a ``Detector``) on labelled ``docs``.

    The documents are split by text hash: ``1 - heldout_fraction`` is fitted, the rest reports P/R/F before
    (the detector's own biases and thresholds) and after. The fit starts from the detector's biases.
    Raises:
        ConfigError: bad beta/recall target, data labels the model lacks, or too few documents to split.
    """
    _check_goal(beta, recall_target)
    scheme = detector.scheme
    check_classes(docs, scheme.classes)
    classes = data_classes(docs)
    if not classes:
        raise ConfigError("the data has no gold spans; calibration needs labelled PII spans")
    fit, held = split_examples(docs, heldout_fraction, salt="calibration")
    if not fit or not held:
        raise ConfigError(f"{len(docs)} document(s) cannot be split into a fitted and a held-out part "
                          f"(heldout_fraction={heldout_fraction}); give more documents")
    logger.info("running the model over %d document(s)", len(docs))
    cached_fit, cached_held = cache_logits(detector, fit), cache_logits(detector, held)
    point = fit_operating_point(cached_fit, scheme, classes, beta=beta, recall_target=recall_target,
                                start=detector.biases, grid=grid, rounds=rounds)
    before = span_counts(score_spans(cached_held, scheme, detector.biases, classes), detector.span_filter.label_thresholds)
    after = span_counts(score_spans(cached_held, scheme, point.biases, classes), point.label_thresholds)
    return CalibrationReport(point, before, after, beta, recall_target, len(fit), len(held))


def _check_goal(beta: float, recall_target: float | None) -> None:
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta > 0:
        raise ConfigError(f"beta must be a positive number; got {beta!r}")
    if recall_target is not None and (isinstance(recall_target, bool) or not isinstance(recall_target, (int, float))
                                      or not 0 < recall_target <= 1):
        raise ConfigError(f"recall_target must be a number in (0, 1] or None; got {recall_target!r}")
