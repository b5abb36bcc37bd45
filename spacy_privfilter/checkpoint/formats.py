"""Tensor naming and shapes of each checkpoint format, as data.

The canonical naming is HF's (``model.layers.{n}.self_attn.q_proj.weight`` ...). The original opf checkpoint and
the OpenMed MLX artifacts share one naming (``block.{n}.attn.qkv.weight`` ...); the tables below map it to the
canonical names. Everything here is pure: names, shapes and manifests, no tensors.
"""
from __future__ import annotations

import math
from typing import Any

from ..config import ModelConfig, QuantizationConfig
from .config_json import quantization_block

# opf stores attention sinks in log2 units, HF in natural-log units (docs/architecture.md §3.2); MLX artifacts
# are converted from HF checkpoints and keep natural-log units.
OPF_SINK_FACTOR = math.log(2.0)
FLOAT_DTYPES = ("F32", "BF16", "F16")
PACKED_DTYPE = "U32"

# opf/MLX name -> canonical name, for tensors outside the blocks.
GLOBAL_RENAMES: dict[str, str] = {
    "embedding.weight": "model.embed_tokens.weight",
    "norm.scale": "model.norm.weight",
    "unembedding.weight": "score.weight",
    "unembedding.bias": "score.bias",
}
# opf/MLX suffix under ``block.{n}.`` -> canonical suffix under ``model.layers.{n}.``.
LAYER_RENAMES: dict[str, str] = {
    "attn.norm.scale": "input_layernorm.weight",
    "attn.out.weight": "self_attn.o_proj.weight",
    "attn.out.bias": "self_attn.o_proj.bias",
    "attn.sinks": "self_attn.sinks",
    "mlp.norm.scale": "post_attention_layernorm.weight",
    "mlp.gate.weight": "mlp.router.weight",
    "mlp.gate.bias": "mlp.router.bias",
    "mlp.swiglu.weight": "mlp.experts.gate_up_proj",
    "mlp.swiglu.bias": "mlp.experts.gate_up_proj_bias",
    "mlp.out.weight": "mlp.experts.down_proj",
    "mlp.out.bias": "mlp.experts.down_proj_bias",
}
# Fused opf/MLX tensors whose output rows are [q | k | v].
FUSED_QKV: dict[str, tuple[str, str, str]] = {
    "attn.qkv.weight": ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
    "attn.qkv.bias": ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"),
}
# Modules that ``mlx.nn.quantize`` turns into quantized ones (``<module>.weight`` becomes uint32 codes plus
# ``<module>.scales`` / ``<module>.biases``). Expert modules are quantized transposed ([E, out, in]).
QUANTIZED_GLOBAL = ("embedding", "unembedding")
QUANTIZED_LAYER = ("attn.qkv", "attn.out", "mlp.gate", "mlp.swiglu", "mlp.out")
TRANSPOSED_EXPERTS = ("mlp.swiglu", "mlp.out")


def canonical_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every canonical tensor name -> its shape for ``config``."""
    d, e, i = config.hidden_size, config.num_local_experts, config.intermediate_size
    q, kv = config.num_attention_heads * config.head_dim, config.num_key_value_heads * config.head_dim
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (config.vocab_size, d)}
    for n in range(config.num_hidden_layers):
        p = f"model.layers.{n}."
        shapes.update({
            p + "input_layernorm.weight": (d,),
            p + "self_attn.q_proj.weight": (q, d), p + "self_attn.q_proj.bias": (q,),
            p + "self_attn.k_proj.weight": (kv, d), p + "self_attn.k_proj.bias": (kv,),
            p + "self_attn.v_proj.weight": (kv, d), p + "self_attn.v_proj.bias": (kv,),
            p + "self_attn.o_proj.weight": (d, q), p + "self_attn.o_proj.bias": (d,),
            p + "self_attn.sinks": (config.num_attention_heads,),
            p + "post_attention_layernorm.weight": (d,),
            p + "mlp.router.weight": (e, d), p + "mlp.router.bias": (e,),
            p + "mlp.experts.gate_up_proj": (e, d, 2 * i), p + "mlp.experts.gate_up_proj_bias": (e, 2 * i),
            p + "mlp.experts.down_proj": (e, i, d), p + "mlp.experts.down_proj_bias": (e, d),
        })
    c = config.num_labels
    shapes.update({"model.norm.weight": (d,), "score.weight": (c, d), "score.bias": (c,)})
    return shapes


def qkv_rows(config: ModelConfig) -> tuple[int, int, int]:
    """Row counts of the q, k and v blocks inside a fused qkv tensor."""
    q, kv = config.num_attention_heads * config.head_dim, config.num_key_value_heads * config.head_dim
    return q, kv, kv


def opf_to_canonical(name: str) -> tuple[str, ...] | None:
    """Canonical name(s) that the opf/MLX tensor ``name`` holds (three for a fused qkv); None if unknown."""
    if name in GLOBAL_RENAMES:
        return (GLOBAL_RENAMES[name],)
    parts = name.split(".", 2)
    if len(parts) != 3 or parts[0] != "block" or not parts[1].isdigit():
        return None
    prefix = f"model.layers.{parts[1]}."
    if parts[2] in LAYER_RENAMES:
        return (prefix + LAYER_RENAMES[parts[2]],)
    if parts[2] in FUSED_QKV:
        return tuple(prefix + s for s in FUSED_QKV[parts[2]])
    return None


def opf_shapes(config: ModelConfig, *, score_bias: bool) -> dict[str, tuple[int, ...]]:
    """Every dense opf/MLX tensor name -> its shape (before any quantization)."""
    canon = canonical_shapes(config)
    d, (q, kv, _) = config.hidden_size, qkv_rows(config)
    shapes = {src: canon[dst] for src, dst in GLOBAL_RENAMES.items() if src != "unembedding.bias" or score_bias}
    for n in range(config.num_hidden_layers):
        for src, dst in LAYER_RENAMES.items():
            shapes[f"block.{n}.{src}"] = canon[f"model.layers.{n}.{dst}"]
        shapes[f"block.{n}.attn.qkv.weight"] = (q + 2 * kv, d)
        shapes[f"block.{n}.attn.qkv.bias"] = (q + 2 * kv,)
    return shapes


def quantized_modules(config: ModelConfig) -> tuple[str, ...]:
    """opf/MLX module names that an MLX quantized artifact stores as codes + scales + biases."""
    layers = tuple(f"block.{n}.{m}" for n in range(config.num_hidden_layers) for m in QUANTIZED_LAYER)
    return QUANTIZED_GLOBAL + layers


def is_transposed_expert(module: str) -> bool:
    return module.split(".", 2)[-1] in TRANSPOSED_EXPERTS


def mlx_file_shapes(config: ModelConfig, quantization: QuantizationConfig | None, *, score_bias: bool,
                    quantized: set[str] | None = None) -> dict[str, tuple[int, ...]]:
    """Every tensor name in an MLX ``weights.safetensors`` -> its shape (quantized layout when quantized).

    ``quantized`` names the modules stored quantized (default: every quantizable module, as ``nn.quantize``
    does); MLX's loader decides per module from the presence of ``<module>.scales``, and so does ours.
    """
    shapes = opf_shapes(config, score_bias=score_bias)
    if quantization is None:
        return shapes
    for module in quantized_modules(config) if quantized is None else sorted(quantized):
        dense = shapes.pop(module + ".weight")
        if is_transposed_expert(module):
            dense = (dense[0], dense[2], dense[1])
        lead, cols = dense[:-1], dense[-1]
        shapes[module + ".weight"] = (*lead, cols * quantization.bits // 32)
        shapes[module + ".scales"] = (*lead, cols // quantization.group_size)
        shapes[module + ".biases"] = (*lead, cols // quantization.group_size)
    return shapes


def stored_quantized(config: ModelConfig, quantization: QuantizationConfig | None, names: set[str]) -> set[str]:
    """The quantizable modules that a weights file with tensor ``names`` stores quantized."""
    if quantization is None:
        return set()
    return {module for module in quantized_modules(config) if module + ".scales" in names}


# -- manifests -----------------------------------------------------------------------------------------------
def mlx_manifest(config: ModelConfig, quantization: QuantizationConfig | None, *,
                 source_model_id: str | None = None) -> dict[str, Any]:
    """``openmed-mlx.json`` (format_version 2)."""
    return {
        "format": "openmed-mlx",
        "format_version": 2,
        "formats": [f"mlx-{quantization.bits}bit" if quantization else "mlx-fp"],
        "task": "token-classification",
        "family": "openai-privacy-filter",
        "source_model_id": source_model_id,
        "config_path": "config.json",
        "label_map_path": "id2label.json",
        "preferred_weights": "weights.safetensors",
        "fallback_weights": None,
        "available_weights": ["weights.safetensors"],
        "weights_format": "safetensors",
        "quantization": None if quantization is None else quantization_block(quantization),
        "max_sequence_length": config.max_position_embeddings,
        "tokenizer": {"path": ".", "files": []},
    }
