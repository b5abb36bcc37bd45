"""id2label -> BIOES label scheme; the six Viterbi transition biases.

The one place that normalises an ``id2label`` (:func:`normalize_id2label`, :func:`read_id2label`) and
parses ``viterbi_calibration.json`` (:class:`TransitionBiases`, :func:`read_checkpoint_biases`).

A scheme is ``O`` plus ``B-/I-/E-/S-<class>`` for every span class. Classes are kept in
first-seen id order (the order of ``id2label``), as the reference implementations do.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import CheckpointError, ConfigError, LabelSchemeError

OUTSIDE = "O"
PREFIXES = ("B", "I", "E", "S")
CALIBRATION_FILE = "viterbi_calibration.json"
ID2LABEL_FILE = "id2label.json"
MLX_BIASES_KEY = "_mlx_viterbi_biases"  # OpenMed MLX artifacts keep the biases in config.json
BIAS_KEYS = (
    "transition_bias_background_stay",      # O -> O
    "transition_bias_background_to_start",  # O -> B-x | S-x
    "transition_bias_inside_to_continue",   # B-x | I-x -> I-x
    "transition_bias_inside_to_end",        # B-x | I-x -> E-x
    "transition_bias_end_to_background",    # E-x | S-x -> O
    "transition_bias_end_to_start",         # E-x | S-x -> B-y | S-y
)
# Biases are log-space nudges; far larger values would rival the -1e9 used for forbidden transitions.
MAX_ABS_BIAS = 1e4
_LABEL = re.compile(r"^([BIES])-(.+)$")


@dataclass(frozen=True, eq=False)
class LabelScheme:
    """A validated BIOES label set.

    Attributes:
        id2label: label name per id.
        classes: span classes in first-seen id order.
        outside_id: id of ``O``.
        begin_ids, inside_ids, end_ids, single_ids: int64 [K] id of ``B-/I-/E-/S-classes[k]``.
        class_of: int64 [C] class index per label id (-1 for ``O``).
    """

    id2label: tuple[str, ...]
    classes: tuple[str, ...]
    outside_id: int
    begin_ids: np.ndarray
    inside_ids: np.ndarray
    end_ids: np.ndarray
    single_ids: np.ndarray
    class_of: np.ndarray

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.id2label)}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelScheme) and other.id2label == self.id2label

    def __hash__(self) -> int:
        return hash(self.id2label)

    def __repr__(self) -> str:
        return f"LabelScheme({self.num_labels} labels, {len(self.classes)} classes)"

    @classmethod
    def from_classes(cls, classes: Sequence[str]) -> "LabelScheme":
        """``O`` followed by B/I/E/S for each class, in the Nemotron/opf id layout."""
        return cls.from_id2label([OUTSIDE] + [f"{p}-{c}" for c in classes for p in PREFIXES])

    @classmethod
    def from_id2label(cls, id2label: Sequence[str] | Mapping[Any, str]) -> "LabelScheme":
        """Build and validate a scheme.

        Args:
            id2label: label names by id, as a sequence or a mapping ``{id: name}`` (ids 0..C-1; str keys
                allowed).
        Raises:
            LabelSchemeError: listing every problem (bad names, duplicates, missing prefixes, no ``O``).
        """
        labels = normalize_id2label(id2label)
        problems: list[str] = []
        by_class: dict[str, dict[str, int]] = {}
        seen: dict[str, int] = {}
        outside = [i for i, label in enumerate(labels) if label == OUTSIDE]
        if len(outside) != 1:
            problems.append(f"expected exactly one '{OUTSIDE}' label, found {len(outside)}")
        for i, label in enumerate(labels):
            if label in seen:
                problems.append(f"label '{label}' appears twice (ids {seen[label]} and {i})")
                continue
            seen[label] = i
            if label == OUTSIDE:
                continue
            match = _LABEL.match(label)
            if match is None:
                problems.append(f"id {i}: '{label}' is neither 'O' nor '<B|I|E|S>-<class>'")
                continue
            by_class.setdefault(match.group(2), {})[match.group(1)] = i
        if not by_class and not problems:
            problems.append("no span classes: a scheme needs at least one B/I/E/S class besides 'O'")
        for name, prefixes in by_class.items():
            missing = [p for p in PREFIXES if p not in prefixes]
            if missing:
                problems.append(f"class '{name}' lacks {', '.join(p + '-' + name for p in missing)}")
        if problems:
            raise LabelSchemeError(
                f"invalid id2label ({len(labels)} labels): " + "; ".join(problems)
                + ". A valid set is 'O' plus B-, I-, E- and S-<class> for every class.")
        classes = tuple(by_class)  # dicts keep insertion order = first-seen id order
        ids = {p: np.array([by_class[c][p] for c in classes], dtype=np.int64) for p in PREFIXES}
        class_of = np.full(len(labels), -1, dtype=np.int64)
        for k, name in enumerate(classes):
            class_of[[by_class[name][p] for p in PREFIXES]] = k
        return cls(labels, classes, outside[0], ids["B"], ids["I"], ids["E"], ids["S"], class_of)


def normalize_id2label(id2label: Sequence[str] | Mapping[Any, str]) -> tuple[str, ...]:
    """Label names by id from a sequence or a mapping ``{id: name}`` (ids 0..C-1 as ints or strings)."""
    if isinstance(id2label, Mapping):
        try:
            items = sorted((int(k), v) for k, v in id2label.items())
        except (TypeError, ValueError) as exc:
            raise LabelSchemeError("id2label keys must be integers or strings of integers") from exc
        ids = [k for k, _ in items]
        if ids != list(range(len(ids))):
            raise LabelSchemeError(
                f"id2label ids must run 0..{len(ids) - 1} without gaps; got {len(ids)} ids")
        labels = [v for _, v in items]
    elif isinstance(id2label, (str, bytes)) or not isinstance(id2label, (list, tuple)):
        raise LabelSchemeError('id2label must be an object {"0": "O", ...} or a list of label names; got '
                               f"{type(id2label).__name__}")
    else:
        labels = list(id2label)
    bad = [i for i, v in enumerate(labels) if not isinstance(v, str)]
    if bad:
        raise LabelSchemeError(f"id2label names must be strings; ids {bad[:10]} are not")
    return tuple(labels)


@dataclass(frozen=True)
class TransitionBiases:
    """Additive log-space scores on the allowed Viterbi transitions (all zero = pure constrained decoding)."""

    transition_bias_background_stay: float = 0.0
    transition_bias_background_to_start: float = 0.0
    transition_bias_inside_to_continue: float = 0.0
    transition_bias_inside_to_end: float = 0.0
    transition_bias_end_to_background: float = 0.0
    transition_bias_end_to_start: float = 0.0

    def __post_init__(self) -> None:
        bad = [f.name for f in fields(self) if not _is_bias(getattr(self, f.name))]
        if bad:
            raise ConfigError(f"transition biases must be finite numbers within +-{MAX_ABS_BIAS:g}; bad: "
                              f"{', '.join(bad)}")
        for f in fields(self):
            object.__setattr__(self, f.name, float(getattr(self, f.name)))

    def as_dict(self) -> dict[str, float]:
        return {key: getattr(self, key) for key in BIAS_KEYS}

    @classmethod
    def from_dict(cls, biases: Mapping[str, Any]) -> "TransitionBiases":
        """Biases from a mapping of (some of) the six keys; missing keys are 0, unknown keys are an error."""
        unknown = sorted(str(k) for k in biases if k not in BIAS_KEYS)
        if unknown:
            raise ConfigError(f"unknown transition bias keys: {', '.join(unknown)}. Valid keys: "
                              f"{', '.join(BIAS_KEYS)}")
        return cls(**{key: biases[key] for key in BIAS_KEYS if key in biases})

    @classmethod
    def from_calibration_file(cls, path: str | os.PathLike) -> "TransitionBiases":
        """Read opf's ``viterbi_calibration.json`` (a file, or a folder holding one).

        Format: ``{"operating_points": {"default": {"biases": {<the six keys>: float}}}}``; all six required.
        """
        p = Path(path)
        if p.is_dir():
            p = p / CALIBRATION_FILE
        return cls._from_calibration(_read_json(p), p.name)

    @classmethod
    def _from_calibration(cls, data: Any, source: str) -> "TransitionBiases":
        try:
            biases = data["operating_points"]["default"]["biases"]
        except (KeyError, TypeError) as exc:
            raise CheckpointError(
                f"{source}: expected {{'operating_points': {{'default': {{'biases': {{...}}}}}}}}; "
                f"the path operating_points.default.biases is missing") from exc
        if not isinstance(biases, Mapping):
            raise CheckpointError(f"{source}: operating_points.default.biases must be an object")
        missing = [key for key in BIAS_KEYS if key not in biases]
        if missing:
            raise CheckpointError(f"{source}: operating_points.default.biases lacks {', '.join(missing)}")
        try:
            return cls.from_dict(biases)
        except ConfigError as exc:
            raise CheckpointError(f"{source}: {exc}") from exc

    @classmethod
    def from_any(cls, biases: "TransitionBiases | Mapping[str, Any] | str | os.PathLike | None"
                 ) -> "TransitionBiases":
        """None -> zeros; a TransitionBiases as is; a mapping (plain six keys, or the calibration layout);
        a path to ``viterbi_calibration.json`` or a folder holding it."""
        if biases is None:
            return cls()
        if isinstance(biases, TransitionBiases):
            return biases
        if isinstance(biases, Mapping):
            if "operating_points" in biases:
                return cls._from_calibration(biases, "calibration mapping")
            return cls.from_dict(biases)
        if isinstance(biases, (str, os.PathLike)):
            return cls.from_calibration_file(biases)
        raise ConfigError(f"biases must be None, a mapping of {', '.join(BIAS_KEYS)}, a TransitionBiases, "
                          f"or a path to {CALIBRATION_FILE}; got {type(biases).__name__}")


def read_id2label(folder: str | os.PathLike, config: Mapping[str, Any]) -> tuple[str, ...]:
    """A checkpoint's label names: config.json's ``id2label``, else ``id2label.json``, else opf's
    ``ner_class_names``; ``()`` when none is there.

    Raises:
        CheckpointError: a source that is unreadable or not a valid id2label (naming the file).
    """
    path = Path(folder) / ID2LABEL_FILE
    if config.get("id2label"):
        raw, source = config["id2label"], "config.json"
    elif path.is_file():
        raw, source = _read_json(path), ID2LABEL_FILE
    else:
        raw, source = config.get("ner_class_names"), "config.json"
    if not raw:
        return ()
    try:
        return normalize_id2label(raw)
    except LabelSchemeError as exc:
        raise CheckpointError(f"{source} in '{Path(folder).name}': {exc}") from None


def read_checkpoint_biases(folder: str | os.PathLike, config: Mapping[str, Any]) -> dict[str, float] | None:
    """The operating point a checkpoint ships: ``viterbi_calibration.json`` (all six keys), else config.json's
    ``_mlx_viterbi_biases`` (missing keys are 0); None when it has neither. Keys given -> float values."""
    path = Path(folder) / CALIBRATION_FILE
    if path.is_file():
        return TransitionBiases.from_calibration_file(path).as_dict()
    block = config.get(MLX_BIASES_KEY)
    if block is None:
        return None
    if not isinstance(block, Mapping):
        raise CheckpointError(f"{MLX_BIASES_KEY} in config.json of '{Path(folder).name}' must be an object "
                              f"mapping {', '.join(BIAS_KEYS)} to numbers")
    try:
        biases = TransitionBiases.from_dict(block)
    except ConfigError as exc:
        raise CheckpointError(f"{MLX_BIASES_KEY} in config.json of '{Path(folder).name}': {exc}") from None
    return {key: getattr(biases, key) for key in BIAS_KEYS if key in block}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path.name} not found: {path}") from exc
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path.name} in '{path.parent.name}': {type(exc).__name__}") from exc


def _is_bias(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return False
    return math.isfinite(float(value)) and abs(float(value)) <= MAX_ABS_BIAS
