"""The values the checkpoint package hands out: what a folder holds and how quantized weights travel.

A leaf module (no torch, no mlx) so that discovery, loading, writing and the backends can all
name these types without importing each other.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, get_args

from ..config import ModelConfig, QuantizationConfig
from .safetensors_io import FileRegion

CheckpointFormat = Literal["hf", "opf", "mlx", "gguf"]
"""On-disk layouts ``inspect_checkpoint`` recognises (MLX covers both the bf16 and the 8-bit artifacts)."""
SaveFormat = Literal["hf", "opf", "mlx-bf16", "mlx-8bit"]
"""Layouts ``save_checkpoint`` writes."""
SAVE_FORMATS: tuple[str, ...] = get_args(SaveFormat)


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint folder as read from its config files and safetensors headers (no tensor data)."""

    path: Path
    format: CheckpointFormat
    config: ModelConfig
    quantization: QuantizationConfig | None
    weight_files: tuple[Path, ...]
    viterbi_biases: Mapping[str, float] | None = None


@dataclass(frozen=True)
class QuantizedWeight:
    """Affine-quantized weight as MLX stores it: uint32-packed codes + per-group scales and biases.

    ``weight``: uint32 [..., rows, cols * bits / 32]; ``scales``/``biases``: [..., rows, cols / group_size].
    Dequantized value: ``scale * q + bias`` per group of ``group_size`` consecutive columns. The parts are
    numpy arrays or tensors of whichever backend read them.
    """

    weight: Any
    scales: Any
    biases: Any
    bits: int
    group_size: int
    source: FileRegion | None = None  # where ``weight``'s bytes lie on disk, when read from a file


__all__ = ["CheckpointFormat", "CheckpointInfo", "QuantizedWeight", "SAVE_FORMATS", "SaveFormat"]
