"""Checkpoint discovery and loading (folder or Hub id) for the HF, opf and OpenMed MLX formats.

CONTRACT (owned by issue #3 checkpoint work; other modules code against it):

    resolve_model_path(model, *, revision=None, cache_dir=None, local_files_only=None) -> Path
        A local folder is used as is. Otherwise ``model`` is a Hub repo id fetched with huggingface_hub
        (only the files needed; cache and HF_HUB_OFFLINE honoured); errors -> ModelNotFoundError naming repo+file.

    inspect_checkpoint(path) -> CheckpointInfo     (reads config/manifest only, no tensors)

    load_state_dict(info, *, framework: "pt" | "mlx" | "numpy") -> dict[str, Tensor | QuantizedWeight]
        Tensors in *canonical HF naming and semantics*, whatever the file format:
            model.embed_tokens.weight                       [V, D]
            model.layers.{n}.input_layernorm.weight         [D]
            model.layers.{n}.self_attn.{q,k,v,o}_proj.weight / .bias   (Linear: [out, in])
            model.layers.{n}.self_attn.sinks                [H] float32, natural-log units (opf/MLX-opf x ln2)
            model.layers.{n}.post_attention_layernorm.weight [D]
            model.layers.{n}.mlp.router.weight / .bias      [E, D] / [E]
            model.layers.{n}.mlp.experts.gate_up_proj       [E, D, 2I]  ([E, in, out])
            model.layers.{n}.mlp.experts.gate_up_proj_bias  [E, 2I]
            model.layers.{n}.mlp.experts.down_proj          [E, I, D]
            model.layers.{n}.mlp.experts.down_proj_bias     [E, D]
            model.norm.weight                               [D]
            score.weight / score.bias                       [C, D] / [C] (zeros when the file has no bias)
        Quantized modules (MLX 8-bit) are QuantizedWeight values instead of dense tensors; for the two expert
        tensors the QuantizedWeight is in MLX's transposed layout ([E, out, in] once dequantized).
        Dtypes are as stored (bf16 stays bf16 for pt/mlx; numpy upcasts bf16 to float32).

    save_checkpoint(state_dict, config, dst, *, format: "hf" | "opf" | "mlx-bf16" | "mlx-8bit") -> Path
        Writes the real on-disk layout of each format from a canonical state dict.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

from .config import ModelConfig, QuantizationConfig

CheckpointFormat = Literal["hf", "opf", "mlx"]
SAVE_FORMATS = ("hf", "opf", "mlx-bf16", "mlx-8bit")


@dataclass(frozen=True)
class CheckpointInfo:
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
    Dequantized value: ``scale * q + bias`` per group of ``group_size`` consecutive columns.
    """

    weight: Any
    scales: Any
    biases: Any
    bits: int
    group_size: int
