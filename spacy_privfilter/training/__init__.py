"""Adapting the model to your data: calibrate the decoder (numpy) and fine-tune the model (PyTorch).

``calibrate`` fits the six Viterbi transition biases and per-class thresholds on labelled documents;
``train`` fine-tunes the classifier head, LoRA adapters or every weight and saves an HF checkpoint. Importing
this package does not import torch: ``train`` loads it on first call.
"""
from __future__ import annotations

from typing import Any

from .calibrate import CalibrationReport, calibrate, fit_operating_point
from .data import GoldSpan, LabelledDoc, load_examples, split_examples
from .options import TrainConfig
from .operating_point import OperatingPoint, read_operating_point, write_operating_point
from .targets import token_targets


def train(*args: Any, **kwargs: Any) -> Any:
    """Fine-tune a checkpoint; see ``spacy_privfilter.training.torch_train.train`` (needs torch)."""
    from .._compat import require
    require("torch", "fine-tuning")
    from .torch_train import train as run
    return run(*args, **kwargs)


__all__ = ["CalibrationReport", "GoldSpan", "LabelledDoc", "OperatingPoint", "TrainConfig", "calibrate", "fit_operating_point",
           "load_examples", "read_operating_point", "split_examples", "token_targets", "train",
           "write_operating_point"]
