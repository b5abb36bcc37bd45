"""Constrained BIOES Viterbi in vectorised numpy.

Grammar (opf's ``ViterbiCRFDecoder``): paths start in ``O``/``B-*``/``S-*`` and end in ``O``/``E-*``/``S-*``;
allowed transitions are ``O -> O | B-x | S-x``, ``E-x | S-x -> O | B-y | S-y`` and
``B-x | I-x -> I-x | E-x``; every other transition scores ``NEG`` (finite, as in the reference).
Each allowed transition adds one of six biases (``labels.BIAS_KEYS``).

The grammar makes one step O(labels) instead of O(labels^2): every ``B-``/``S-`` label has the
same predecessors (``O`` and all end-like labels) with the same transition score, so they share
one maximum; ``I-x``/``E-x`` only choose between ``B-x`` and ``I-x``. Ties go to the lowest
predecessor id, and scores are added in the same order as the dense recurrence, so the path is
identical to the O(T*C^2) textbook version (``viterbi_dense``).
"""
from __future__ import annotations

import numpy as np

from .labels import LabelScheme, TransitionBiases

NEG = -1e9


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax.

    Args:
        logits: float [T, C].
    Returns:
        float32 [T, C].
    """
    x = np.asarray(logits, dtype=np.float32)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def boundary_scores(scheme: LabelScheme) -> tuple[np.ndarray, np.ndarray]:
    """float64 [C] start and end scores: 0 where a path may start/end, ``NEG`` elsewhere."""
    start = np.full(scheme.num_labels, NEG)
    end = np.full(scheme.num_labels, NEG)
    start[[scheme.outside_id, *scheme.begin_ids, *scheme.single_ids]] = 0.0
    end[[scheme.outside_id, *scheme.end_ids, *scheme.single_ids]] = 0.0
    return start, end


def transition_matrix(scheme: LabelScheme, biases: TransitionBiases | None = None) -> np.ndarray:
    """Dense float64 [C, C] transition scores ``A[from, to]`` (for ``viterbi_dense`` and inspection)."""
    b = biases or TransitionBiases()
    o, begin, inside, end, single = (scheme.outside_id, scheme.begin_ids, scheme.inside_ids, scheme.end_ids,
                                     scheme.single_ids)
    starts = np.concatenate([begin, single])
    endlike = np.concatenate([end, single])
    a = np.full((scheme.num_labels, scheme.num_labels), NEG)
    a[o, o] = b.transition_bias_background_stay
    a[o, starts] = b.transition_bias_background_to_start
    a[endlike, o] = b.transition_bias_end_to_background
    a[np.ix_(endlike, starts)] = b.transition_bias_end_to_start
    for prev in (begin, inside):
        a[prev, inside] = b.transition_bias_inside_to_continue
        a[prev, end] = b.transition_bias_inside_to_end
    return a


def viterbi(log_probs: np.ndarray, scheme: LabelScheme, biases: TransitionBiases | None = None) -> np.ndarray:
    """Best grammatical label path, O(T * C).

    Args:
        log_probs: float [T, C] per-token log-probabilities (``log_softmax`` of the logits).
        scheme: the label scheme (C == scheme.num_labels).
        biases: transition biases; None means all zero.
    Returns:
        int64 [T] label ids (a valid BIOES path).
    """
    lp = _check(log_probs, scheme)
    steps = lp.shape[0]
    if steps == 0:
        return np.zeros(0, dtype=np.int64)
    b = biases or TransitionBiases()
    o = scheme.outside_id
    begin, inside, end, single = scheme.begin_ids, scheme.inside_ids, scheme.end_ids, scheme.single_ids
    endlike = np.sort(np.concatenate([end, single]))  # ascending ids so argmax ties go to the lowest id
    inside_first = inside < begin  # per class: does I-x win a tie against B-x?
    start, finish = boundary_scores(scheme)
    stay, to_start = b.transition_bias_background_stay, b.transition_bias_background_to_start
    cont, close = b.transition_bias_inside_to_continue, b.transition_bias_inside_to_end
    to_bg, end_to_start = b.transition_bias_end_to_background, b.transition_bias_end_to_start

    back = np.empty((steps, scheme.num_labels), dtype=np.int32)
    delta = lp[0] + start
    for t in range(1, steps):
        ends = delta[endlike]
        # B-*/S-*: one shared best predecessor among O and every E-*/S-*.
        start_val, start_from = _best_of_two(delta[o] + to_start, o, ends + end_to_start, endlike)
        o_val, o_from = _best_of_two(delta[o] + stay, o, ends + to_bg, endlike)
        # I-x/E-x: B-x or I-x of the same class.
        d_begin, d_inside = delta[begin], delta[inside]
        cont_val, cont_from = _pick(d_begin + cont, d_inside + cont, begin, inside, inside_first)
        close_val, close_from = _pick(d_begin + close, d_inside + close, begin, inside, inside_first)

        new = np.empty_like(delta)
        row = back[t]
        new[o], row[o] = o_val, o_from
        new[begin], row[begin] = start_val, start_from
        new[single], row[single] = start_val, start_from
        new[inside], row[inside] = cont_val, cont_from
        new[end], row[end] = close_val, close_from
        delta = new + lp[t]
    return _backtrack(back, int(np.argmax(delta + finish)))


def viterbi_dense(log_probs: np.ndarray, scheme: LabelScheme, biases: TransitionBiases | None = None) -> np.ndarray:
    """The textbook O(T * C^2) recurrence over ``transition_matrix``; same contract as ``viterbi``."""
    lp = _check(log_probs, scheme)
    steps = lp.shape[0]
    if steps == 0:
        return np.zeros(0, dtype=np.int64)
    trans = transition_matrix(scheme, biases)
    start, finish = boundary_scores(scheme)
    back = np.empty((steps, scheme.num_labels), dtype=np.int32)
    delta = lp[0] + start
    for t in range(1, steps):
        scores = delta[:, None] + trans
        back[t] = np.argmax(scores, axis=0)
        delta = scores[back[t], np.arange(scheme.num_labels)] + lp[t]
    return _backtrack(back, int(np.argmax(delta + finish)))


def tags_to_token_spans(tags: np.ndarray, scheme: LabelScheme) -> list[tuple[str, int, int]]:
    """Label ids -> ``(class_name, token_start, token_end)`` spans, end exclusive (opf ``labels_to_spans`` rules).

    Also accepts paths that break the grammar: ``O`` closes; ``S-x`` emits one token; ``B-x`` opens;
    ``I-x`` continues an open x (else opens x); ``E-x`` closes an open x (else emits one token).
    """
    spans: list[tuple[str, int, int]] = []
    open_class, open_start = -1, 0
    class_of = scheme.class_of
    prefix = _prefix_table(scheme)
    for t, tag in enumerate(np.asarray(tags, dtype=np.int64).tolist()):
        kind, k = prefix[tag], int(class_of[tag])
        if kind == "I" and open_class == k:
            continue
        if kind == "E" and open_class == k:
            spans.append((scheme.classes[k], open_start, t + 1))
            open_class = -1
            continue
        if open_class >= 0:
            spans.append((scheme.classes[open_class], open_start, t))
            open_class = -1
        if kind in ("S", "E"):
            spans.append((scheme.classes[k], t, t + 1))
        elif kind in ("B", "I"):
            open_class, open_start = k, t
    if open_class >= 0:
        spans.append((scheme.classes[open_class], open_start, len(tags)))
    return spans


def _prefix_table(scheme: LabelScheme) -> list[str]:
    table = ["O"] * scheme.num_labels
    for kind, ids in zip("BIES", (scheme.begin_ids, scheme.inside_ids, scheme.end_ids, scheme.single_ids)):
        for i in ids.tolist():
            table[i] = kind
    return table


def _best_of_two(scalar: float, scalar_id: int, values: np.ndarray, ids: np.ndarray) -> tuple[float, int]:
    """Max of ``scalar`` and ``values`` (ids ascending); ties to the lowest id."""
    k = int(np.argmax(values))
    best, best_id = values[k], int(ids[k])
    if scalar > best or (scalar == best and scalar_id < best_id):
        return scalar, scalar_id
    return best, best_id


def _pick(from_begin: np.ndarray, from_inside: np.ndarray, begin: np.ndarray, inside: np.ndarray,
          inside_first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    take_inside = (from_inside > from_begin) | ((from_inside == from_begin) & inside_first)
    return np.where(take_inside, from_inside, from_begin), np.where(take_inside, inside, begin)


def _backtrack(back: np.ndarray, last: int) -> np.ndarray:
    path = np.empty(back.shape[0], dtype=np.int64)
    path[-1] = last
    for t in range(back.shape[0] - 1, 0, -1):
        last = int(back[t, last])
        path[t - 1] = last
    return path


def _check(log_probs: np.ndarray, scheme: LabelScheme) -> np.ndarray:
    lp = np.asarray(log_probs, dtype=np.float64)
    if lp.ndim != 2 or lp.shape[1] != scheme.num_labels:
        raise ValueError(f"log_probs must have shape (tokens, {scheme.num_labels}); got {lp.shape}")
    nans = int(np.isnan(lp).sum())
    if nans:
        raise ValueError(f"log_probs contain {nans} NaN values; the model output is broken")
    return lp
