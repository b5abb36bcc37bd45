"""An operating point: the six Viterbi transition biases plus per-class span-score thresholds.

Stored in the checkpoint's own ``viterbi_calibration.json`` layout,
``{"operating_points": {"default": {"biases": {<six keys>}, "label_thresholds": {<class>: score}}}}``;
readers that know only ``biases`` (opf, ``labels.TransitionBiases``) ignore the extra key.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import CheckpointError
from ..labels import CALIBRATION_FILE, TransitionBiases
from ..spans import is_probability

THRESHOLDS_KEY = "label_thresholds"


@dataclass(frozen=True)
class OperatingPoint:
    """Decoder settings fitted to labelled data (``label_thresholds``: class -> minimum span score in [0, 1])."""

    biases: TransitionBiases = TransitionBiases()
    label_thresholds: Mapping[str, float] = field(default_factory=dict)

    def as_calibration(self) -> dict[str, Any]:
        """The ``viterbi_calibration.json`` content."""
        point: dict[str, Any] = {"biases": self.biases.as_dict()}
        if self.label_thresholds:
            point[THRESHOLDS_KEY] = {k: float(v) for k, v in sorted(self.label_thresholds.items())}
        return {"operating_points": {"default": point}}


def write_operating_point(path: str | os.PathLike, point: OperatingPoint) -> Path:
    """Write ``point`` to ``path`` (a folder gets ``viterbi_calibration.json``); returns the file written."""
    target = Path(path)
    if target.is_dir():
        target = target / CALIBRATION_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(point.as_calibration(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, target)  # never a half-written calibration file
    return target


def read_operating_point(path: str | os.PathLike) -> OperatingPoint:
    """Read biases and (optional) per-class thresholds from a ``viterbi_calibration.json`` (or its folder).

    Raises:
        CheckpointError: the file is missing or malformed (names the file and the bad field).
    """
    target = Path(path)
    if target.is_dir():
        target = target / CALIBRATION_FILE
    biases = TransitionBiases.from_calibration_file(target)
    data = json.loads(target.read_text(encoding="utf-8"))  # readable: from_calibration_file parsed it
    raw = data["operating_points"]["default"].get(THRESHOLDS_KEY) or {}
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{target.name}: operating_points.default.{THRESHOLDS_KEY} must be an object")
    bad = [str(k) for k, v in raw.items() if not is_probability(v)]
    if bad:
        raise CheckpointError(f"{target.name}: {THRESHOLDS_KEY} must be numbers in [0, 1]; bad for: "
                              f"{', '.join(sorted(bad))}")
    return OperatingPoint(biases, {str(k): float(v) for k, v in raw.items()})
