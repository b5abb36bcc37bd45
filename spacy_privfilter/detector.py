"""text -> CharSpans on one screen of code, without spaCy.

The interface the spaCy component codes against:
    Detector(backend, *, biases=None, tokenizer=None, max_tokens=..., max_batch_tokens=...,
             threshold=0.0, label_thresholds=None)
    Detector.from_pretrained(model=DEFAULT_MODEL, *, revision=None, backend="auto", device="auto",
                             dtype="auto", **options) -> Detector
    Detector.detect(text) -> list[CharSpan]
    Detector.detect_batch(texts) -> list[list[CharSpan]]     same result as detect() one by one

Long documents are cut into windows of at most ``max_tokens``. Each window's scored *core* keeps
``config.receptive_field`` tokens of context on each side (less at the document edges), which is
everything that can reach a core token through the banded attention, so the stitched logits equal
an unwindowed forward pass. One Viterbi pass then runs over the whole document.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Mapping, NamedTuple

import numpy as np

from .decode import log_softmax, viterbi
from .errors import ConfigError
from .labels import LabelScheme, TransitionBiases
from .spans import CharSpan, tags_to_char_spans
from .tokens import TokenizedText, Tokenizer, get_tokenizer

DEFAULT_MODEL = "OpenMed/privacy-filter-nemotron-mlx-8bit"


class Window(NamedTuple):
    """Tokens ``[start, stop)`` of document ``doc`` go to the model; ``[core_start, core_stop)`` is kept."""

    doc: int
    start: int
    stop: int
    core_start: int
    core_stop: int


def plan_windows(num_tokens: int, max_tokens: int, margin: int, doc: int = 0) -> list[Window]:
    """Cover ``num_tokens`` with windows of <= ``max_tokens`` whose cores tile the document.

    Every core token has ``margin`` tokens of context on each side inside its window, or the document edge.
    Needs ``max_tokens > 2 * margin`` when the document is longer than ``max_tokens``.
    """
    if num_tokens <= max_tokens:
        return [Window(doc, 0, num_tokens, 0, num_tokens)] if num_tokens else []
    windows = []
    core_start = 0
    while core_start < num_tokens:
        start = max(0, core_start - margin)
        stop = min(num_tokens, start + max_tokens)
        core_stop = stop if stop == num_tokens else stop - margin
        windows.append(Window(doc, start, stop, core_start, core_stop))
        core_start = core_stop
    return windows


def pack_batches(windows: list[Window], max_batch_tokens: int) -> list[list[Window]]:
    """Group windows, longest first, so that ``len(batch) * longest <= max_batch_tokens`` (padded tokens)."""
    ordered = sorted(windows, key=lambda w: (-(w.stop - w.start), w.doc, w.start))
    batches: list[list[Window]] = []
    for window in ordered:
        longest = batches[-1][0].stop - batches[-1][0].start if batches else 0
        if batches and (len(batches[-1]) + 1) * longest <= max_batch_tokens:
            batches[-1].append(window)
        else:
            batches.append([window])
    return batches


class Detector:
    """Finds PII character spans with a loaded backend.

    Args:
        backend: a ``Backend`` (``logits(input_ids, attention_mask)``, ``config``).
        biases: transition biases (mapping, ``TransitionBiases``, or path to ``viterbi_calibration.json``);
            None uses the backend's ``viterbi_biases`` if it has any, else zeros.
        tokenizer: a ``Tokenizer``, a path to ``o200k_base.tiktoken`` (or a folder with it), or None for
            the default.
        max_tokens: most tokens per model call row; longer documents are windowed.
        max_batch_tokens: most padded tokens (batch x seq) per model call.
        threshold: drop spans whose score is below this (0..1).
        label_thresholds: per-class thresholds (0..1) replacing ``threshold`` for those classes.
    """

    def __init__(self, backend: Any, *, biases: Any = None,
                 tokenizer: Tokenizer | str | os.PathLike | None = None, max_tokens: int = 8192,
                 max_batch_tokens: int = 16384, threshold: float = 0.0,
                 label_thresholds: Mapping[str, float] | None = None) -> None:
        self.backend = backend
        self.scheme = LabelScheme.from_id2label(backend.config.id2label)
        if biases is None:  # the checkpoint's own operating point (viterbi_calibration.json), if it has one
            biases = getattr(backend, "viterbi_biases", None)
        self.biases = TransitionBiases.from_any(biases)
        self.margin = int(backend.config.receptive_field)
        self.max_tokens = _check_int("max_tokens", max_tokens, 2 * self.margin + 1,
                                     f"it must leave a core after {self.margin} context tokens on each side")
        self.max_batch_tokens = _check_int("max_batch_tokens", max_batch_tokens, self.max_tokens,
                                           "one window of max_tokens must fit in a batch")
        self.threshold = _check_unit("threshold", threshold)
        self.label_thresholds = self._check_label_thresholds(label_thresholds or {})
        self._tokenizer = tokenizer if isinstance(tokenizer, Tokenizer) else None
        self._tokenizer_path = None if isinstance(tokenizer, Tokenizer) else tokenizer

    @classmethod
    def from_pretrained(cls, model: str | os.PathLike = DEFAULT_MODEL, *, revision: str | None = None,
                        backend: str = "auto", device: str = "auto", dtype: str = "auto",
                        **options: Any) -> "Detector":
        """Load a checkpoint (folder or Hub id) into a runtime and wrap it.

        ``options`` are ``quantize`` (passed to the loader) and the constructor's keyword options. A
        ``o200k_base.tiktoken`` inside the model folder is used for the tokenizer when none is given.
        """
        from .backends import load_backend

        quantize = options.pop("quantize", None)
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise ConfigError(f"unknown Detector options: {', '.join(unknown)}. Valid: "
                              f"{', '.join(sorted(_OPTIONS | {'quantize'}))}")
        loaded = load_backend(model, revision=revision, backend=backend, device=device, dtype=dtype,
                              quantize=quantize)
        if options.get("tokenizer") is None:
            # A tokenizer file shipped in the model folder makes the folder work offline; without one,
            # get_tokenizer falls back to tiktoken's own loader.
            options["tokenizer"] = str(model) if os.path.isdir(model) else _model_folder(loaded)
        return cls(loaded, **options)

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:  # loaded on first use so that constructing a Detector stays cheap
            self._tokenizer = get_tokenizer(self._tokenizer_path)
        return self._tokenizer

    def detect(self, text: str) -> list[CharSpan]:
        """Character spans of PII in ``text``, sorted by start."""
        return self.detect_batch([text])[0]

    def detect_batch(self, texts: Iterable[str]) -> list[list[CharSpan]]:
        """``detect`` for many texts, sharing length-sorted model batches; results keep the input order."""
        texts = list(texts)
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise TypeError(f"detect_batch needs str texts; items {bad[:10]} are not")
        tokenized = [self.tokenizer.encode(t) if t and not t.isspace() else None for t in texts]
        results: list[list[CharSpan]] = []
        # Logits cost 4 * num_labels bytes per token (~0.9 KB for 221 labels), ~40x the tokens themselves, so
        # they are computed and decoded a group of documents at a time: memory stays bounded by the group size
        # (or one long document), not by how many texts the caller passes at once.
        for group in _token_groups(tokenized, GROUP_BATCHES * self.max_batch_tokens):
            logits = self.document_logits([tokenized[i].input_ids if tokenized[i] is not None else None
                                           for i in group])
            results += [self._spans(texts[i], tokenized[i], doc_logits)
                        if tokenized[i] is not None and len(tokenized[i]) else [] for i, doc_logits in
                        zip(group, logits)]
        return results

    def document_logits(self, docs: list[np.ndarray | None]) -> list[np.ndarray | None]:
        """float32 [T, C] logits per document (None stays None), via windows packed into batches."""
        windows = [w for i, ids in enumerate(docs) if ids is not None
                   for w in plan_windows(len(ids), self.max_tokens, self.margin, doc=i)]
        out = [np.empty((len(ids), self.scheme.num_labels), dtype=np.float32) if ids is not None else None
               for ids in docs]
        pad = self.backend.config.pad_token_id
        for batch in pack_batches(windows, self.max_batch_tokens):
            seq = max(w.stop - w.start for w in batch)
            input_ids = np.full((len(batch), seq), pad, dtype=np.int64)
            attention_mask = np.zeros((len(batch), seq), dtype=bool)
            for row, w in enumerate(batch):
                input_ids[row, : w.stop - w.start] = docs[w.doc][w.start:w.stop]
                attention_mask[row, : w.stop - w.start] = True
            logits = np.asarray(self.backend.logits(input_ids, attention_mask), dtype=np.float32)
            expected = (len(batch), seq, self.scheme.num_labels)
            if logits.shape != expected:
                raise ValueError(f"backend returned logits of shape {logits.shape}; expected {expected}")
            for row, w in enumerate(batch):
                core = logits[row, w.core_start - w.start: w.core_stop - w.start]
                out[w.doc][w.core_start:w.core_stop] = core
        return out

    def _spans(self, text: str, tok: TokenizedText, logits: np.ndarray) -> list[CharSpan]:
        log_probs = log_softmax(logits)
        tags = viterbi(log_probs, self.scheme, self.biases)
        return tags_to_char_spans(text, tags, log_probs, tok.char_starts, tok.char_ends, self.scheme,
                                  threshold=self.threshold, label_thresholds=self.label_thresholds)

    def _check_label_thresholds(self, thresholds: Mapping[str, float]) -> dict[str, float]:
        unknown = sorted(str(k) for k in thresholds if k not in self.scheme.classes)
        if unknown:
            raise ConfigError(f"label_thresholds has unknown classes: {', '.join(unknown)}. Valid classes: "
                              f"{', '.join(self.scheme.classes)}")
        return {str(k): _check_unit(f"label_thresholds[{k!r}]", v) for k, v in thresholds.items()}


GROUP_BATCHES = 8  # documents are decoded in groups of about this many model batches of tokens


def _token_groups(tokenized: list[TokenizedText | None], max_tokens: int) -> list[list[int]]:
    """Consecutive index groups whose token counts sum to <= ``max_tokens`` (a longer document goes alone)."""
    groups: list[list[int]] = [[]]
    total = 0
    for i, tok in enumerate(tokenized):
        size = len(tok) if tok is not None else 0
        if groups[-1] and total + size > max_tokens:
            groups.append([])
            total = 0
        groups[-1].append(i)
        total += size
    return groups if groups[0] else []


_OPTIONS = {"biases", "tokenizer", "max_tokens", "max_batch_tokens", "threshold", "label_thresholds"}


def _check_int(name: str, value: Any, minimum: int, why: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum} ({why}); got {value!r}")
    return int(value)


def _check_unit(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{name} must be a number in [0, 1]; got {value!r}")
    return float(value)


def _model_folder(backend: Any) -> str | None:
    """The local checkpoint folder behind a loaded backend (``model_path``), e.g. a Hub cache snapshot."""
    path = getattr(backend, "model_path", None)
    return str(path) if path is not None and os.path.isdir(path) else None
