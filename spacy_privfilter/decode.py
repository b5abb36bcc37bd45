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

``viterbi`` runs that recurrence in C++ (``csrc/viterbi.cpp``, built on first use by ``cbuild.py``; ~20x faster at
221 labels, where a numpy step is ~15 numpy calls) and checks it against ``viterbi_numpy`` once per process;
without a compiler, or with ``SPACY_PRIVFILTER_NATIVE=0``, it runs ``viterbi_numpy``.
"""
from __future__ import annotations

import ctypes
import functools
import logging
from pathlib import Path
from typing import Callable

import numpy as np

from .cbuild import BuildError, build_library, disabled, load_or_reason
from .labels import LabelScheme, TransitionBiases

log = logging.getLogger(__name__)

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
    """Best grammatical label path, O(T * C): compiled where it builds, else ``viterbi_numpy`` (the same path).

    Args:
        log_probs: float [T, C] per-token log-probabilities (``log_softmax`` of the logits).
        scheme: the label scheme (C == scheme.num_labels).
        biases: transition biases; None means all zero.
    Returns:
        int64 [T] label ids (a valid BIOES path).
    """
    lp = _check(log_probs, scheme)
    compiled = _compiled_viterbi()
    if compiled is None or lp.shape[0] == 0:
        return _viterbi_steps(lp, scheme, biases)
    return compiled(lp, scheme, biases or TransitionBiases())


def viterbi_numpy(log_probs: np.ndarray, scheme: LabelScheme, biases: TransitionBiases | None = None) -> np.ndarray:
    """``viterbi`` in numpy, one vectorised step per token: the reference the compiled decoder is checked against."""
    return _viterbi_steps(_check(log_probs, scheme), scheme, biases)


def _viterbi_steps(lp: np.ndarray, scheme: LabelScheme, biases: TransitionBiases | None) -> np.ndarray:
    steps = lp.shape[0]
    if steps == 0:
        return np.zeros(0, dtype=np.int64)
    b = biases or TransitionBiases()
    o = scheme.outside_id
    begin, inside, end, single = scheme.begin_ids, scheme.inside_ids, scheme.end_ids, scheme.single_ids
    endlike = np.sort(np.concatenate([end, single]))  # ascending ids so argmax ties go to the lowest id
    starts = np.concatenate([begin, single])
    inside_end = np.concatenate([inside, end])
    begin_inside = np.stack([begin, inside])  # [2, K]: row 0 B-x, row 1 I-x
    inside_first = inside < begin  # per class: does I-x win a tie against B-x?
    # Rows: scores into O / into B-*,S-* from an end-like label; into I-x / E-x from B-x or I-x.
    from_end = np.array([[b.transition_bias_end_to_background], [b.transition_bias_end_to_start]])
    from_inside = np.array([b.transition_bias_inside_to_continue,
                            b.transition_bias_inside_to_end]).reshape(2, 1, 1)
    stay, to_start = b.transition_bias_background_stay, b.transition_bias_background_to_start
    start, finish = boundary_scores(scheme)

    back = np.empty((steps, scheme.num_labels), dtype=np.int32)
    delta = lp[0] + start
    for t in range(1, steps):
        # O and all B-*/S-* choose among O and every end-like label (one shared maximum for the starts).
        ends = delta[endlike] + from_end  # [2, 2K]
        k_bg, k_start = np.argmax(ends, axis=1).tolist()
        o_val, o_from = _best_of_two(delta[o] + stay, o, ends[0, k_bg], int(endlike[k_bg]))
        start_val, start_from = _best_of_two(delta[o] + to_start, o, ends[1, k_start], int(endlike[k_start]))
        # I-x/E-x choose between B-x and I-x of the same class.
        inner = delta[begin_inside] + from_inside  # [2 (to I, to E), 2 (from B, from I), K]
        take_inside = (inner[:, 1] > inner[:, 0]) | ((inner[:, 1] == inner[:, 0]) & inside_first)
        new = np.empty_like(delta)
        row = back[t]
        new[o], row[o] = o_val, o_from
        new[starts], row[starts] = start_val, start_from
        new[inside_end] = np.where(take_inside, inner[:, 1], inner[:, 0]).ravel()
        row[inside_end] = np.where(take_inside, inside, begin).ravel()
        delta = new + lp[t]
    return _backtrack(back, int(np.argmax(delta + finish)))


def viterbi_dense(log_probs: np.ndarray, scheme: LabelScheme,
                  biases: TransitionBiases | None = None) -> np.ndarray:
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
    """Label ids -> ``(class_name, token_start, token_end)`` spans, end exclusive (opf's ``labels_to_spans``).

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


def _best_of_two(a: float, a_id: int, b: float, b_id: int) -> tuple[float, int]:
    """The larger score with its label id; ties to the lower id."""
    if a > b or (a == b and a_id < b_id):
        return a, a_id
    return b, b_id


def _backtrack(back: np.ndarray, last: int) -> np.ndarray:
    path = np.empty(back.shape[0], dtype=np.int64)
    path[-1] = last
    for t in range(back.shape[0] - 1, 0, -1):
        last = int(back[t, last])
        path[t - 1] = last
    return path


# -- the compiled decoder ---------------------------------------------------------------------------------------

_SOURCE = Path(__file__).with_name("csrc") / "viterbi.cpp"
_FLAGS = ("-O2", "-std=c++17", "-shared", "-fPIC", "-ffp-contract=off")  # no fused multiply-add: numpy's roundings
_ABI = 1
_reason: str | None = None


def compiled_viterbi_reason() -> str | None:
    """Why ``viterbi`` runs in numpy (None while the compiled decoder is in use or not yet loaded)."""
    return _reason


@functools.lru_cache(maxsize=None)
def _compiled_viterbi() -> Callable[[np.ndarray, LabelScheme, TransitionBiases], np.ndarray] | None:
    global _reason
    decode, _reason = load_or_reason(_load_compiled, "the Viterbi library")
    if decode is None:
        log.info("compiled Viterbi decoder unavailable: %s; decoding in numpy", _reason)
    return decode


def _load_compiled() -> Callable[[np.ndarray, LabelScheme, TransitionBiases], np.ndarray]:
    if disabled():
        raise BuildError("disabled by SPACY_PRIVFILTER_NATIVE=0")
    library = ctypes.CDLL(str(build_library("viterbi", (_SOURCE,), _FLAGS, what="the Viterbi decoder")))
    if library.pf_viterbi_abi() != _ABI:
        raise BuildError(f"the Viterbi library has ABI {library.pf_viterbi_abi()}, expected {_ABI}")
    entry = library.pf_viterbi
    entry.argtypes = [ctypes.c_void_p, *[ctypes.c_int64] * 4, *[ctypes.c_void_p] * 12]
    entry.restype = None
    decode = functools.partial(_run_compiled, entry)
    _self_test(decode)
    return decode


def _run_compiled(entry, lp: np.ndarray, scheme: LabelScheme, b: TransitionBiases) -> np.ndarray:
    steps, labels = lp.shape
    lp = np.ascontiguousarray(lp, dtype=np.float64)
    _, (*ids, endlike, start, finish) = _scheme_arrays(scheme)
    biases = np.array([b.transition_bias_background_stay, b.transition_bias_background_to_start,
                       b.transition_bias_end_to_background, b.transition_bias_end_to_start,
                       b.transition_bias_inside_to_continue, b.transition_bias_inside_to_end], dtype=np.float64)
    delta, following = np.empty(labels), np.empty(labels)
    back = np.empty((steps, labels), dtype=np.int32)
    path = np.empty(steps, dtype=np.int64)
    entry(lp.ctypes.data, steps, labels, len(scheme.begin_ids), scheme.outside_id, *ids, endlike, biases.ctypes.data,
          start, finish, delta.ctypes.data, following.ctypes.data, back.ctypes.data, path.ctypes.data)
    return path


@functools.lru_cache(maxsize=8)
def _scheme_arrays(scheme: LabelScheme) -> tuple[tuple[np.ndarray, ...], tuple[int, ...]]:
    """A scheme's arrays for the C decoder (B-/I-/E-/S- ids, sorted E- and S- ids, start and end scores) and their
    addresses, built once per scheme: rebuilding them took ~22 of the ~37 us a call cost before its first token."""
    ids = [np.ascontiguousarray(i, dtype=np.int64) for i in (scheme.begin_ids, scheme.inside_ids, scheme.end_ids,
                                                              scheme.single_ids)]
    arrays = (*ids, np.sort(np.concatenate(ids[2:])), *boundary_scores(scheme))
    return arrays, tuple(a.ctypes.data for a in arrays)


def _self_test(decode) -> None:
    """Against viterbi_numpy: two schemes (one with shuffled ids), random and tie-laden scores, with and without
    biases; refuses a library that differs on any path."""
    rng = np.random.default_rng(0)
    order = ["O"] + [f"{p}-{c}" for c in ("a", "b", "c") for p in "BIES"]
    schemes = [LabelScheme.from_id2label(order), LabelScheme.from_id2label([order[i] for i in rng.permutation(13)])]
    for case in range(24):
        scheme = schemes[case % 2]
        steps = int(rng.integers(1, 30))
        lp = rng.normal(0, 3, (steps, 13)) if case % 3 else rng.integers(-3, 1, (steps, 13)).astype(np.float64)
        biases = TransitionBiases(*rng.integers(-2, 3, 6).astype(float)) if case % 4 else TransitionBiases()
        if not np.array_equal(decode(lp, scheme, biases), _viterbi_steps(lp, scheme, biases)):
            raise BuildError("the Viterbi library failed its self-test (a path differs from numpy's)")


def _check(log_probs: np.ndarray, scheme: LabelScheme) -> np.ndarray:
    lp = np.asarray(log_probs, dtype=np.float64)
    if lp.ndim != 2 or lp.shape[1] != scheme.num_labels:
        raise ValueError(f"log_probs must have shape (tokens, {scheme.num_labels}); got {lp.shape}")
    nans = int(np.isnan(lp).sum())
    if nans:
        raise ValueError(f"log_probs contain {nans} NaN values; the model output is broken")
    return lp
