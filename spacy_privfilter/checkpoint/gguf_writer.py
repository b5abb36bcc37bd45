"""Write a canonical state dict as a GGUF file in the ggml port's layout (the inverse of ``gguf.py``).

Precision per tensor follows the port's files: with ``dtype="float16"`` the attention, expert, embedding and
classifier matrices are F16 and norms, biases, sinks and the router stay F32; ``experts="Q8_0"`` stores the
three expert matrices in Q8_0 (its "Q8" files). Used by tests and to hand our checkpoints to the ggml runtime.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np

from .._compat import require
from ..config import ModelConfig
from . import gguf_names as names

F16_LAYER = ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
             "self_attn.o_proj.weight")
F16_GLOBAL = ("model.embed_tokens.weight", "score.weight")
POOLING_TOKEN_CLASSIFICATION = 5


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().float().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def write_gguf(state_dict: Mapping[str, Any], config: ModelConfig, dst: str | os.PathLike, *,
               dtype: Literal["float16", "bfloat16", "float32"] = "float16", experts: Literal["dense", "Q8_0"] = "dense",
               name: str = "privacy-filter") -> Path:
    """Write ``state_dict`` (canonical names, dense tensors) to the GGUF file ``dst``; returns its path."""
    require("gguf", "writing GGUF checkpoints")
    import gguf

    dst = Path(dst)
    writer = gguf.GGUFWriter(str(dst), names.ARCHITECTURE)
    writer.add_name(name)
    writer.add_file_type({"float32": 0, "float16": 1, "bfloat16": 32}[dtype])  # ggml's LlamaFileType numbers
    for key, field, _ in names.METADATA:
        value = getattr(config, field)
        add = (writer.add_bool if isinstance(value, bool) else writer.add_uint32 if isinstance(value, int)
               else writer.add_float32)
        add(names.key(key), value)
    writer.add_uint32(names.key("feed_forward_length"), config.intermediate_size)
    writer.add_uint32(names.key("attention.value_length"), config.head_dim)
    writer.add_string(names.key("rope.scaling.type"), "yarn")
    writer.add_uint32(names.key("pooling_type"), POOLING_TOKEN_CLASSIFICATION)
    writer.add_uint32(names.key("embedding_length_out"), config.num_labels)
    writer.add_array(names.key(names.LABELS_KEY), list(config.id2label))
    writer.add_string("tokenizer.ggml.model", names.TOKENIZER_MODEL)
    writer.add_string("tokenizer.ggml.pre", names.TOKENIZER_PRE)
    writer.add_uint32("tokenizer.ggml.padding_token_id", config.pad_token_id)
    half = {"float16": np.float16, "bfloat16": gguf.GGMLQuantizationType.BF16}.get(dtype, np.float32)
    f16 = set(F16_GLOBAL) | {f"model.layers.{n}.{s}" for n in range(config.num_hidden_layers) for s in F16_LAYER}

    def add(gguf_name: str, array: np.ndarray, precision: Any = np.float32, quantize: bool = False) -> None:
        kind = gguf.GGMLQuantizationType.Q8_0 if quantize else precision
        if isinstance(kind, gguf.GGMLQuantizationType):
            writer.add_tensor(gguf_name, gguf.quants.quantize(np.ascontiguousarray(array), kind), raw_dtype=kind)
        else:
            writer.add_tensor(gguf_name, np.ascontiguousarray(array, dtype=precision))

    for gguf_name, canon in names.gguf_to_canonical(config).items():
        add(gguf_name, _numpy(state_dict[canon]), half if canon in f16 else np.float32)
    i = config.intermediate_size
    for n in range(config.num_hidden_layers):
        p, q = f"blk.{n}.", f"model.layers.{n}.mlp.experts."
        gate_up = _numpy(state_dict[q + "gate_up_proj"]).transpose(0, 2, 1)  # [E, 2I, D]
        for gguf_name, part in zip(names.EXPERT_WEIGHTS, (gate_up[:, :i], gate_up[:, i:],
                                                          _numpy(state_dict[q + "down_proj"]).transpose(0, 2, 1))):
            add(p + gguf_name, part, half, quantize=experts == "Q8_0")
        bias = _numpy(state_dict[q + "gate_up_proj_bias"])
        for gguf_name, part in zip(names.SPLIT_BIAS[1], (bias[..., :i], bias[..., i:])):
            add(p + gguf_name, part)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst
