"""The validated, frozen options of the ``privacy_filter`` component.

spaCy checks the factory's type hints but neither coerces nor range-checks values, and a component
built directly bypasses the config entirely; so every option is checked here and an error names the
bad key, what was given (its type, never document text) and the valid choices.
"""
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Literal, Mapping, Optional, Tuple, get_args

from ..backends.base import BACKENDS, DTYPES, Backend, DType, check_runtime_options
from ..errors import ConfigError
from ..spans import check_probability

# Defined here, not in alignment.py, so that the CLI can offer them as choices without importing spaCy.
AlignmentMode = Literal["strict", "contract", "expand"]
EntsPolicy = Literal["prioritize_new", "prioritize_existing", "replace"]
SaveModel = Literal["copy", "reference"]
ALIGNMENT_MODES: Tuple[str, ...] = get_args(AlignmentMode)
ENTS_POLICIES: Tuple[str, ...] = get_args(EntsPolicy)
SAVE_MODES: Tuple[str, ...] = get_args(SaveModel)
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps|gpu)$")


def _choice(key: str, value: Any, choices: Tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"privacy_filter: '{key}' must be one of {', '.join(choices)}; got {value!r}")


def _text(key: str, value: Any, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value.strip():
        kind = "a non-empty string" + (" or null" if optional else "")
        raise ConfigError(f"privacy_filter: '{key}' must be {kind}; got {type(value).__name__}")


def _probability(key: str, value: Any) -> float:
    try:
        return check_probability(f"'{key}'", value)
    except ConfigError as exc:
        raise ConfigError(f"privacy_filter: {exc}") from None


def _str_dict(key: str, value: Any) -> Dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"privacy_filter: '{key}' must be a mapping; got {type(value).__name__}")
    bad = [repr(k) for k in value if not isinstance(k, str) or not k]
    if bad:
        raise ConfigError(f"privacy_filter: '{key}' keys must be non-empty strings; bad keys: "
                          f"{', '.join(bad)}")
    return dict(value)


def _runtime_options(backend: str, options: Any) -> Dict[str, Any]:
    """Checked against the runtime ``backend`` resolves to now ("auto" stays open when no runtime is installed)."""
    from ..backends import select_backend
    from ..errors import BackendUnavailableError

    if options:
        try:
            backend = select_backend(backend)
        except BackendUnavailableError:  # loading will say which runtime to install
            pass
    try:
        return check_runtime_options(backend, options)
    except ConfigError as exc:
        raise ConfigError(f"privacy_filter: 'runtime_options': {exc}") from None


@dataclass(frozen=True)
class FilterSettings:
    """Options of one ``privacy_filter`` component (see ``make_privacy_filter`` for their meaning)."""

    model: str
    revision: Optional[str] = None
    backend: Backend = "auto"
    device: str = "auto"
    dtype: DType = "auto"
    spans_key: str = "pii"
    set_ents: bool = False
    ents_policy: EntsPolicy = "prioritize_new"
    labels: Optional[Tuple[str, ...]] = None
    label_map: Mapping[str, str] = field(default_factory=dict)
    threshold: float = 0.0
    label_thresholds: Mapping[str, float] = field(default_factory=dict)
    viterbi_biases: Optional[Mapping[str, float]] = None
    alignment_mode: AlignmentMode = "expand"
    max_batch_tokens: int = 16384
    save_model: SaveModel = "copy"
    runtime_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _text("model", self.model)
        _text("revision", self.revision, optional=True)
        _choice("backend", self.backend, BACKENDS)
        _text("device", self.device)
        if not DEVICE_PATTERN.match(self.device):
            raise ConfigError(f"privacy_filter: 'device' must be auto, cpu, cuda, cuda:N, mps or gpu (MLX); "
                              f"got {self.device!r}")
        _choice("dtype", self.dtype, DTYPES)
        _text("spans_key", self.spans_key)
        if not isinstance(self.set_ents, bool):
            raise ConfigError(f"privacy_filter: 'set_ents' must be true or false; got "
                              f"{type(self.set_ents).__name__}")
        _choice("ents_policy", self.ents_policy, ENTS_POLICIES)
        if self.labels is not None:
            if isinstance(self.labels, str) or not all(isinstance(x, str) and x for x in self.labels):
                raise ConfigError("privacy_filter: 'labels' must be null or a list of non-empty label names")
            if not self.labels:  # an empty list would keep no class at all: every span silently dropped
                raise ConfigError("privacy_filter: 'labels' is an empty list, which would drop every span; use null "
                                  "to keep all classes, or list the classes to keep")
            object.__setattr__(self, "labels", tuple(self.labels))
        label_map = _str_dict("label_map", self.label_map)
        bad = [k for k, v in label_map.items() if not isinstance(v, str) or not v.strip()]
        if bad:
            raise ConfigError(f"privacy_filter: 'label_map' values must be non-empty strings; bad for: "
                              f"{', '.join(sorted(bad))}")
        object.__setattr__(self, "label_map", label_map)
        object.__setattr__(self, "threshold", _probability("threshold", self.threshold))
        thresholds = _str_dict("label_thresholds", self.label_thresholds)
        object.__setattr__(self, "label_thresholds",
                           {k: _probability(f"label_thresholds.{k}", v) for k, v in thresholds.items()})
        if self.viterbi_biases is not None:
            from ..labels import TransitionBiases

            biases = _str_dict("viterbi_biases", self.viterbi_biases)
            try:
                TransitionBiases.from_dict(biases)
            except ConfigError as exc:
                raise ConfigError(f"privacy_filter: 'viterbi_biases': {exc}") from None
            object.__setattr__(self, "viterbi_biases", biases)
        _choice("alignment_mode", self.alignment_mode, ALIGNMENT_MODES)
        if isinstance(self.max_batch_tokens, bool) or not isinstance(self.max_batch_tokens, int) \
                or self.max_batch_tokens < 1:
            shown = repr(self.max_batch_tokens) if isinstance(self.max_batch_tokens, (int, float)) \
                else type(self.max_batch_tokens).__name__
            raise ConfigError(f"privacy_filter: 'max_batch_tokens' must be a positive integer; got {shown}")
        _choice("save_model", self.save_model, SAVE_MODES)
        object.__setattr__(self, "runtime_options", _runtime_options(self.backend, self.runtime_options))

    def output_label(self, label: str) -> str:
        return self.label_map.get(label, label)

    def span_filter_options(self, classes: Tuple[str, ...]) -> Dict[str, Any]:
        """``labels``, ``threshold`` and ``label_thresholds`` for ``Detector.filtered``, by model class.

        A name in ``labels`` or ``label_thresholds`` may be a model class or a ``label_map`` target (e.g.
        ``PERSON``, then it covers every class mapped to it); a class's own key wins over its target's.
        """
        self._check_labels(classes)
        out = {c: self.output_label(c) for c in classes}
        thresholds = {c: self.label_thresholds.get(c, self.label_thresholds.get(out[c])) for c in classes}
        return {"labels": None if self.labels is None else [c for c in classes if {c, out[c]} & set(self.labels)],
                "threshold": self.threshold,
                "label_thresholds": {c: t for c, t in thresholds.items() if t is not None}}

    def _check_labels(self, classes: Tuple[str, ...]) -> None:
        """Raise when ``labels`` or ``label_thresholds`` name a class the model does not have."""
        known = set(classes) | set(self.label_map.values())
        unknown = sorted({x for x in (self.labels or ()) if x not in known})
        unknown_thr = sorted(k for k in self.label_thresholds if k not in known)
        if unknown or unknown_thr:
            where = []
            if unknown:
                where.append(f"'labels' has {', '.join(unknown)}")
            if unknown_thr:
                where.append(f"'label_thresholds' has {', '.join(unknown_thr)}")
            raise ConfigError(f"privacy_filter: unknown label names: {'; '.join(where)}. The model's classes "
                              f"are: {', '.join(classes)} (label_map targets are accepted too)")
