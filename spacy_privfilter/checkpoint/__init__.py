"""Checkpoint files: find them (folder or Hub id), describe them, read them as numpy, write them.

``resolve_model_path`` -> ``inspect_checkpoint`` -> ``load_state_dict`` (numpy) or a backend's own reader;
``save_checkpoint`` writes the HF, opf and OpenMed MLX layouts. Names, shapes and numpy only: no torch, no mlx.
"""
from .discover import inspect_checkpoint
from .hub import resolve_model_path
from .loader import load_state_dict
from .types import SAVE_FORMATS, CheckpointFormat, CheckpointInfo, QuantizedWeight, SaveFormat
from .writer import save_checkpoint

__all__ = ["SAVE_FORMATS", "CheckpointFormat", "CheckpointInfo", "QuantizedWeight", "SaveFormat",
           "inspect_checkpoint", "load_state_dict", "resolve_model_path", "save_checkpoint"]
