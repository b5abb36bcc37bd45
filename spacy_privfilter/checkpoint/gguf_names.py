"""GGUF names of the ggml port (privacy-filter.cpp), as data: tensor names and metadata keys.

One table per direction would drift apart, so there is one table each, walked by the reader (``gguf.py``)
and the writer (``gguf_writer.py``). Pure: names and config fields, no tensors.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..config import ModelConfig

ARCHITECTURE = "openai-privacy-filter"


def _f32(value: Any) -> float:
    """A float32 metadata value as the decimal it was written from (1e-05, not 9.99999974738e-06)."""
    return float(str(np.float32(value)))


# Canonical name -> GGUF name, outside the blocks.
GLOBAL_NAMES: dict[str, str] = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "score.weight": "cls.output.weight",
    "score.bias": "cls.output.bias",
}
# Canonical suffix under ``model.layers.{n}.`` -> GGUF suffix under ``blk.{n}.``, for tensors copied as they are.
LAYER_NAMES: dict[str, str] = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "post_attention_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight", "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight", "self_attn.o_proj.bias": "attn_output.bias",
    "self_attn.sinks": "attn_sinks.weight",  # natural-log sink logits, as in HF
    "mlp.router.weight": "ffn_gate_inp.weight", "mlp.router.bias": "ffn_gate_inp.bias",
    "mlp.experts.down_proj_bias": "ffn_down_exps.bias",
}
# The experts are stored [E, out, in] (ggml's matmul layout) and the fused gate/up pair split in two halves:
# canonical gate_up_proj [E, D, 2I] = concat(gate, up) on the last axis, each half transposed in the file.
GATE, UP, DOWN = "ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"
EXPERT_WEIGHTS = (f"{GATE}.weight", f"{UP}.weight", f"{DOWN}.weight")
SPLIT_BIAS = ("mlp.experts.gate_up_proj_bias", (f"{GATE}.bias", f"{UP}.bias"))

# Metadata: (key under ``<architecture>.``, ModelConfig field, reader). ``None`` fields are written, never read.
METADATA: tuple[tuple[str, str, Callable[[Any], Any]], ...] = (
    ("block_count", "num_hidden_layers", int),
    ("context_length", "max_position_embeddings", int),
    ("embedding_length", "hidden_size", int),
    ("expert_feed_forward_length", "intermediate_size", int),
    ("attention.head_count", "num_attention_heads", int),
    ("attention.head_count_kv", "num_key_value_heads", int),
    ("attention.key_length", "head_dim", int),
    ("attention.layer_norm_rms_epsilon", "rms_norm_eps", _f32),
    ("attention.sliding_window", "sliding_window", int),
    ("expert_count", "num_local_experts", int),
    ("expert_used_count", "num_experts_per_tok", int),
    ("rope.freq_base", "rope_theta", _f32),
    ("rope.scaling.factor", "rope_factor", _f32),
    ("rope.scaling.original_context_length", "rope_original_max_position_embeddings", int),
    ("rope.scaling.yarn_beta_fast", "rope_beta_fast", _f32),
    ("rope.scaling.yarn_beta_slow", "rope_beta_slow", _f32),
    ("rope.scaling.yarn_truncate", "rope_truncate", bool),
)
REQUIRED = ("block_count", "embedding_length", "expert_feed_forward_length", "attention.head_count",
            "attention.head_count_kv", "attention.key_length", "expert_count", "expert_used_count")
LABELS_KEY = "classifier.output_labels"
# Tokenizer the ggml port writes: byte-level BPE ("gpt2") with the o200k_base pre-tokenizer; ids equal tiktoken's.
TOKENIZER_MODEL, TOKENIZER_PRE = "gpt2", "gpt-4o"


def key(name: str) -> str:
    return f"{ARCHITECTURE}.{name}"


def gguf_to_canonical(config: ModelConfig) -> dict[str, str]:
    """GGUF name -> canonical name, for every tensor copied as it is (experts are handled by the reader)."""
    out = {gguf: canon for canon, gguf in GLOBAL_NAMES.items()}
    for n in range(config.num_hidden_layers):
        out.update({f"blk.{n}.{gguf}": f"model.layers.{n}.{canon}" for canon, gguf in LAYER_NAMES.items()})
    return out


def expected_names(config: ModelConfig, *, score_bias: bool = True) -> set[str]:
    """Every tensor name a GGUF file of ``config`` holds."""
    names = set(gguf_to_canonical(config))
    if not score_bias:
        names.discard(GLOBAL_NAMES["score.bias"])
    for n in range(config.num_hidden_layers):
        names.update(f"blk.{n}.{name}" for name in EXPERT_WEIGHTS + SPLIT_BIAS[1])
    return names
