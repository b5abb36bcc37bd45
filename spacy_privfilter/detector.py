"""text -> CharSpans on one screen of code, without spaCy.

    text --tokens.py--> input_ids + char offsets --batching.py--> padded windows --backend--> logits
         --decode.py--> Viterbi tags --spans.py--> CharSpans, kept or dropped by the one SpanFilter

``Detector.detect_batch(texts)`` equals ``detect()`` one by one: windows and batches change how the model
is called, never what it computes (see ``batching.py``).
"""
from __future__ import annotations

import copy
import os
from typing import Any, Iterable, Mapping

import numpy as np

from .batching import GROUP_BATCHES, group_documents, pack_batches, pad_batch, plan_windows
from .decode import log_softmax, viterbi
from .errors import ConfigError
from .labels import LabelScheme, TransitionBiases
from .spans import CharSpan, SpanFilter, tags_to_char_spans
from .tokens import TokenizedText, Tokenizer, get_tokenizer

DEFAULT_MODEL = "OpenMed/privacy-filter-nemotron-mlx-8bit"


class Detector:
    """Finds PII character spans with a loaded backend.

    Args:
        backend: a ``ModelBackend`` (``logits(input_ids, attention_mask)``, ``config``, ``viterbi_biases``).
        biases: transition biases (mapping, ``TransitionBiases``, or path to ``viterbi_calibration.json``);
            None uses the backend's ``viterbi_biases`` if it has any, else zeros.
        tokenizer: a ``Tokenizer``, a path to ``o200k_base.tiktoken`` (or a folder with it), or None for
            the default.
        max_tokens: most tokens per model call row; longer documents are windowed.
        max_batch_tokens: most padded tokens (batch x seq) per model call.
        threshold: drop spans whose score is below this (0..1).
        label_thresholds: per-class thresholds (0..1) replacing ``threshold`` for those classes.
        labels: keep only spans of these classes; None keeps every class.
    """

    def __init__(self, backend: Any, *, biases: Any = None,
                 tokenizer: Tokenizer | str | os.PathLike | None = None, max_tokens: int = 8192,
                 max_batch_tokens: int = 16384, threshold: float = 0.0,
                 label_thresholds: Mapping[str, float] | None = None, labels: Iterable[str] | None = None) -> None:
        self.backend = backend
        self.scheme = LabelScheme.from_id2label(backend.config.id2label)
        # None: the checkpoint's own operating point (its viterbi_calibration.json), if it has one.
        self.biases = TransitionBiases.from_any(getattr(backend, "viterbi_biases", None) if biases is None
                                                else biases)
        self.margin = int(backend.config.receptive_field)
        self.max_tokens = _check_int("max_tokens", max_tokens, 2 * self.margin + 1,
                                     f"it must leave a core after {self.margin} context tokens on each side")
        self.max_batch_tokens = _check_int("max_batch_tokens", max_batch_tokens, self.max_tokens,
                                           "one window of max_tokens must fit in a batch")
        self.span_filter = SpanFilter.checked(self.scheme.classes, threshold=threshold,
                                              label_thresholds=label_thresholds, labels=labels)
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
            # A tokenizer file shipped in the model folder (also a Hub cache folder) makes it work offline;
            # without one, get_tokenizer falls back to tiktoken's own loader.
            folder = model if os.path.isdir(model) else getattr(loaded, "model_path", None)
            options["tokenizer"] = str(folder) if folder is not None and os.path.isdir(folder) else None
        return cls(loaded, **options)

    def filtered(self, *, threshold: float = 0.0, label_thresholds: Mapping[str, float] | None = None,
                 labels: Iterable[str] | None = None) -> "Detector":
        """This detector (same model, tokenizer and biases) with another span filter."""
        other = copy.copy(self)
        other.span_filter = SpanFilter.checked(self.scheme.classes, threshold=threshold,
                                               label_thresholds=label_thresholds, labels=labels)
        return other

    @property
    def threshold(self) -> float:
        return self.span_filter.threshold

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
        lengths = [len(tok) if tok is not None else 0 for tok in tokenized]
        for group in group_documents(lengths, GROUP_BATCHES * self.max_batch_tokens):
            logits = self.document_logits([tokenized[i].input_ids if lengths[i] else None for i in group])
            results += [self._spans(texts[i], tokenized[i], doc_logits) if lengths[i] else []
                        for i, doc_logits in zip(group, logits)]
        return results

    def document_logits(self, docs: list[np.ndarray | None]) -> list[np.ndarray | None]:
        """float32 [T, C] logits per document (None stays None), via windows packed into batches."""
        windows = [w for i, ids in enumerate(docs) if ids is not None
                   for w in plan_windows(len(ids), self.max_tokens, self.margin, doc=i)]
        out = [np.empty((len(ids), self.scheme.num_labels), dtype=np.float32) if ids is not None else None
               for ids in docs]
        for batch in pack_batches(windows, self.max_batch_tokens):
            input_ids, attention_mask = pad_batch(batch, docs, self.backend.config.pad_token_id)
            logits = np.asarray(self.backend.logits(input_ids, attention_mask), dtype=np.float32)
            expected = (*input_ids.shape, self.scheme.num_labels)
            if logits.shape != expected:
                raise ValueError(f"backend returned logits of shape {logits.shape}; expected {expected}")
            for row, w in enumerate(batch):
                out[w.doc][w.core_start:w.core_stop] = logits[row, w.core_start - w.start: w.core_stop - w.start]
        return out

    def _spans(self, text: str, tok: TokenizedText, logits: np.ndarray) -> list[CharSpan]:
        log_probs = log_softmax(logits)
        tags = viterbi(log_probs, self.scheme, self.biases)
        return tags_to_char_spans(text, tags, log_probs, tok.char_starts, tok.char_ends, self.scheme,
                                  span_filter=self.span_filter)


_OPTIONS = {"biases", "tokenizer", "max_tokens", "max_batch_tokens", "threshold", "label_thresholds", "labels"}


def _check_int(name: str, value: Any, minimum: int, why: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum} ({why}); got {value!r}")
    return int(value)
