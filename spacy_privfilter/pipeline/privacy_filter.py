"""spaCy component ``privacy_filter``: PII spans with scores, ents merging, batched pipe, save/load, scoring.

``nlp.add_pipe("privacy_filter")`` works without importing this package: the factory is registered through
the ``spacy_factories`` entry point. The constructor is cheap; the model loads once, on first use or in
``initialize``, and is shared by every later call.
"""
import functools
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from spacy.language import Language
from spacy.pipeline import Pipe
from spacy.scorer import Scorer, get_ner_prf
from spacy.tokens import Doc, SpanGroup
from spacy.training import Example
from spacy.util import minibatch

from .alignment import align_spans, merge_ents, uncovered_spans, warn_unaligned
from ..detector import DEFAULT_MODEL
from ..checkpoint.files import TOKENIZER_FILE
from .storage import ModelStorage
from .settings import AlignmentMode, EntsPolicy, FilterSettings, SaveModel
from ..backends.base import Backend, DType
from ..errors import ConfigError
from .colors import register_mapped_colors
from .runtime import check_device, declare_requirements, resolve_device, shared_backend
from ..memory import HeapTrimmer, collector_paused
from ..spans import CharSpan
from ..recognizers.engine import MODEL_SOURCE

DETECTOR_MAX_TOKENS = 8192  # window length; a smaller max_batch_tokens shrinks it to fit

DEFAULT_CONFIG: Dict[str, Any] = {
    "model": DEFAULT_MODEL,
    "revision": None,
    "backend": "auto",
    "device": "auto",
    "dtype": "auto",
    "spans_key": "pii",
    "set_ents": False,
    "ents_policy": "prioritize_new",
    "labels": None,
    "label_map": {},
    "threshold": 0.0,
    "label_thresholds": {},
    "viterbi_biases": None,
    "alignment_mode": "expand",
    "max_batch_tokens": 16384,
    "save_model": "copy",
    "runtime_options": {},
    "calibration": None,
}


@Language.factory(
    "privacy_filter",
    default_config=DEFAULT_CONFIG,
    assigns=["doc.spans", "doc.ents"],
    default_score_weights={"spans_pii_f": 1.0, "spans_pii_p": 0.0, "spans_pii_r": 0.0},
)
def make_privacy_filter(
    nlp: Language,
    name: str,
    model: str,
    revision: Optional[str],
    backend: Backend,
    device: str,
    dtype: DType,
    spans_key: str,
    set_ents: bool,
    ents_policy: EntsPolicy,
    labels: Optional[List[str]],
    label_map: Dict[str, str],
    threshold: float,
    label_thresholds: Dict[str, float],
    viterbi_biases: Optional[Dict[str, float]],
    alignment_mode: AlignmentMode,
    max_batch_tokens: int,
    save_model: SaveModel,
    runtime_options: Dict[str, Any],
    calibration: Optional[str] = None,
) -> "PrivacyFilter":
    """Build a ``privacy_filter`` component.

    Args:
        model: Hub repo id or local folder of a Privacy Filter checkpoint (HF, opf or OpenMed MLX format).
        revision: Hub revision (branch, tag or commit); ignored for folders.
        backend: runtime, ``auto`` picks MLX on Apple Silicon and torch elsewhere.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (torch).
        dtype: compute dtype; ``auto`` follows the checkpoint.
        spans_key: key of the ``doc.spans`` group that receives the spans.
        set_ents: also write non-overlapping spans to ``doc.ents``.
        ents_policy: how new spans merge with entities already in ``doc.ents``.
        labels: keep only these classes (model class names or ``label_map`` targets); null keeps all.
        label_map: rename classes on output, e.g. ``{"first_name": "PERSON"}``.
        threshold: drop spans whose score is below this.
        label_thresholds: per-class thresholds overriding ``threshold`` (class or ``label_map`` names).
        viterbi_biases: transition biases for the decoder (the six ``transition_bias_*`` keys).
        alignment_mode: how character spans snap to tokens: ``strict``, ``contract`` or ``expand``.
        max_batch_tokens: most model tokens per forward pass (caps memory; long docs are windowed).
        save_model: ``copy`` stores the model files in the saved pipeline (offline load); ``reference`` only
            stores the model name.
        runtime_options: how the runtime loads the model, checked against ``backend`` (torch:
            ``quantized_experts`` keep|dequantize, ``expert_precision`` auto|float32|bfloat16, ``pack_experts``
            null|true|false, ``expert_kernel`` auto|native|torch; MLX takes none).
        calibration: a ``viterbi_calibration.json`` (``spacy-privfilter calibrate``); its biases apply when
            ``viterbi_biases`` is null and its label thresholds for classes ``label_thresholds`` leaves out.
    """
    if calibration is not None:
        from ..training.operating_point import read_operating_point

        point = read_operating_point(calibration)
        viterbi_biases = viterbi_biases or point.biases.as_dict()
        label_thresholds = {**point.label_thresholds, **label_thresholds}
    settings = FilterSettings(
        model=model, revision=revision, backend=backend, device=device, dtype=dtype, spans_key=spans_key,
        set_ents=set_ents, ents_policy=ents_policy, labels=labels, label_map=label_map, threshold=threshold,
        label_thresholds=label_thresholds, viterbi_biases=viterbi_biases, alignment_mode=alignment_mode,
        max_batch_tokens=max_batch_tokens, save_model=save_model, runtime_options=runtime_options)
    declare_requirements(nlp.meta, backend=backend, model=model)
    return PrivacyFilter(nlp.vocab, name=name, settings=settings)


def load_detector(model: str, *, revision: Optional[str], backend: str, device: str, dtype: str,
                  runtime_options: Optional[Dict[str, Any]] = None, **options: Any):
    """A Detector over the process-wide shared model for these settings (``options``: the Detector's own)."""
    from ..detector import Detector

    loaded = shared_backend(model, revision=revision, backend=backend, device=device, dtype=dtype,
                            **(runtime_options or {}))
    return Detector(loaded, **options)


def _spans_for_scoring(doc: Doc, attr: str) -> Iterable[Any]:
    """``Scorer.score_spans`` getter: ``attr`` is ``spans_<key>``."""
    return doc.spans.get(attr[len("spans_"):], [])


def _has_spans(doc: Doc, *, spans_key: str) -> bool:
    return spans_key in doc.spans


def _is_blank(text: str) -> bool:
    return not text or text.isspace()


class PrivacyFilter(ModelStorage, Pipe):
    """Detect PII with a Privacy Filter model and annotate ``doc.spans[spans_key]`` (and ``doc.ents``).

    Attributes:
        detector: the shared ``Detector`` (loaded on first access); assign one to inject it (tests do).
        settings: the validated options (``FilterSettings``).
    """

    def __init__(self, vocab, name: str = "privacy_filter", *, settings: FilterSettings) -> None:
        self.vocab = vocab
        self.name = name
        self.settings = settings
        self._detector = None
        self._injected = False
        self._model_path: Optional[Path] = None  # model files stored with a loaded pipeline
        self._source: Tuple[str, Optional[str]] = (settings.model, settings.revision)
        self._tmpdir: Optional[tempfile.TemporaryDirectory] = None
        self._classes: Optional[Tuple[str, ...]] = None  # the model's span classes, once known
        self._trimmer = HeapTrimmer()  # keeps long runs near the model's size (see memory.py)
        check_device(settings.device, settings.backend, component=name)
        if settings.label_map:
            register_mapped_colors(settings.label_map)

    # -- the model -------------------------------------------------------------------------
    @property
    def detector(self):
        if self._detector is None:
            self._detector = self._with_filter(self._load_detector())
        return self._detector

    @detector.setter
    def detector(self, detector) -> None:
        self._detector = self._with_filter(detector) if detector is not None else None
        self._injected = detector is not None

    def _load_detector(self):
        from ..backends import select_backend

        s = self.settings
        if self._model_path is not None:
            model, revision = str(self._model_path), None
        else:
            model, revision = self._source
        tokenizer = None
        if (Path(model) / TOKENIZER_FILE).is_file():  # a stored pipeline tokenizes without network or cache
            tokenizer = str(Path(model) / TOKENIZER_FILE)
        elif Path(model).is_dir():
            tokenizer = model
        backend = select_backend(s.backend)
        device = resolve_device(s.device, backend)
        check_device(device, backend, component=self.name)
        try:
            return load_detector(model, revision=revision, backend=backend, device=device, dtype=s.dtype,
                                 runtime_options=dict(s.runtime_options),
                                 tokenizer=tokenizer, max_tokens=min(DETECTOR_MAX_TOKENS, s.max_batch_tokens),
                                 max_batch_tokens=s.max_batch_tokens,
                                 biases=dict(s.viterbi_biases) if s.viterbi_biases else None)
        except ConfigError as exc:
            if not str(exc).startswith("max_tokens "):
                raise
            # max_tokens is derived from max_batch_tokens here: name the setting the user actually chose.
            raise ConfigError(f"privacy_filter: 'max_batch_tokens' is too small for this model: "
                              f"{str(exc).replace('max_tokens', 'max_batch_tokens', 1)}") from None

    def _with_filter(self, detector):
        """The detector applying this component's labels and thresholds (the Detector filters, not us)."""
        classes = tuple(detector.scheme.classes)
        filtered = detector.filtered(**self.settings.span_filter_options(classes))
        self._classes = classes
        return filtered

    @property
    def labels(self) -> Tuple[str, ...]:
        """The labels this component writes (after ``label_map`` and ``labels``); empty until the model's
        classes are known (``initialize``, the first doc, or a saved pipeline that recorded them)."""
        if not self._classes:
            return ()
        kept = self.settings.span_filter_options(self._classes)["labels"]
        return tuple(sorted({self.settings.output_label(c) for c in (self._classes if kept is None else kept)}))

    @property
    def label_data(self) -> List[str]:
        return list(self.labels)

    def initialize(self, get_examples: Optional[Callable[[], Iterable[Example]]] = None, *,
                   nlp: Optional[Language] = None) -> None:
        """Load the model now rather than on the first document (nothing is trained)."""
        self.detector  # noqa: B018  (property access loads and validates)

    # -- running -------------------------------------------------------------------------
    def __call__(self, doc: Doc) -> Doc:
        self.set_annotations([doc], self._detect([doc.text]))
        return doc

    def pipe(self, stream: Iterable[Doc], *, batch_size: int = 128) -> Iterator[Doc]:
        """Annotate docs chunk by chunk: one ``detect_batch`` call per chunk of ``batch_size`` docs.

        The Detector packs the chunk's texts by model tokens and windows long ones, so the result equals
        one-by-one processing. If a chunk fails, its docs are retried one by one so that only a failing doc
        reaches the error handler (``nlp.set_error_handler``); docs come back in input order. Python's cyclic
        garbage collector pauses while a chunk runs (``memory.collector_paused``).
        """
        error_handler = self.get_error_handler()
        for docs in minibatch(stream, size=batch_size):
            self.detector  # noqa: B018  (a model that cannot load is an error for the caller, not per doc)
            try:
                with collector_paused():  # see memory.py: the batch's spans never reach a full collection
                    char_spans = self._detect([doc.text for doc in docs])
                    self.set_annotations(docs, char_spans)
            except Exception:  # retry doc by doc below; the handler sees each doc's own error
                char_spans = None
            if char_spans is not None:
                yield from docs
                continue
            for doc in docs:
                try:
                    yield self(doc)
                except Exception as exc:
                    error_handler(self.name, self, [doc], exc)

    def _detect(self, texts: Sequence[str]) -> List[List[CharSpan]]:
        """Detected spans per text; blank texts skip the model (nothing to find, nothing to pay)."""
        results: List[List[CharSpan]] = [[] for _ in texts]
        todo = [i for i, text in enumerate(texts) if not _is_blank(text)]
        if todo:
            found = self.detector.detect_batch([texts[i] for i in todo])
            self._trimmer.after_batch()
            if len(found) != len(todo):
                raise RuntimeError(f"detector returned {len(found)} results for {len(todo)} texts")
            for i, spans in zip(todo, found):
                results[i] = spans
        return results

    def set_annotations(self, docs: Sequence[Doc], char_spans: Sequence[Sequence[CharSpan]]) -> None:
        """Write detected spans into each doc: ``doc.spans[key]`` (+ ``attrs``), optionally ``doc.ents``."""
        s = self.settings
        for doc, found in zip(docs, char_spans):
            labels = [s.output_label(span.label) for span in found]
            spans, scores, unaligned = align_spans(doc, found, labels, alignment_mode=s.alignment_mode)
            group = SpanGroup(doc, name=s.spans_key, spans=spans)
            group.attrs["scores"] = np.asarray(scores, dtype=np.float32)
            group.attrs["sources"] = [MODEL_SOURCE] * len(spans)  # parallel, like scores (privacy_patterns)
            group.attrs["unaligned"] = len(unaligned)
            # Detected character spans that the aligned spans do not fully cover (strict/contract alignment drops
            # or shrinks spans): the redactor hides these characters too, so no detected PII stays visible.
            group.attrs["uncovered"] = uncovered_spans(spans, found, labels)
            doc.spans[s.spans_key] = group
            if unaligned:
                warn_unaligned(unaligned, alignment_mode=s.alignment_mode, spans_key=s.spans_key)
            if s.set_ents:
                merge_ents(doc, spans, policy=s.ents_policy)

    # -- evaluation ----------------------------------------------------------------------
    def score(self, examples: Iterable[Example], **kwargs: Any) -> Dict[str, Any]:
        """Span P/R/F overall and per label on ``spans_key`` (``spans_<key>_*``); ``ents_*`` with set_ents.

        Only examples whose reference doc has ``doc.spans[spans_key]`` are scored for spans.
        """
        examples = list(examples)
        key = self.settings.spans_key
        scores = Scorer.score_spans(examples, f"spans_{key}", getter=_spans_for_scoring,
                                    has_annotation=functools.partial(_has_spans, spans_key=key),
                                    labeled=True, allow_overlap=True)
        if self.settings.set_ents:
            scores.update(get_ner_prf(examples))
        return scores

    # -- multiprocessing -------------------------------------------------------------------
    def __reduce__(self):
        # Pipe is a Cython class whose own pickling ignores __getstate__, so the state is chosen here:
        # a loaded model is not pickled (the receiving process reloads it from its folder or Hub id).
        state = dict(self.__dict__)
        state["_tmpdir"] = None  # the owning process cleans its folder up
        if not self._injected:
            state["_detector"] = None
        return (_restore, (type(self), self.name, state))


def _restore(cls, name: str, state: Dict[str, Any]) -> "PrivacyFilter":
    component = cls.__new__(cls)
    component.name = name  # a Cython attribute of Pipe, not in __dict__
    component.__dict__.update(state)
    return component
