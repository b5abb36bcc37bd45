"""``config.json`` of each format as one ordered key table, walked by one reader and one writer.

Each row names a ``ModelConfig`` field, its key in Hugging Face configs (a dotted path for the nested
``rope_parameters``), its key in the original opf configs, and the alias OpenMed's MLX configs add next
to the HF key. Defaults are ``ModelConfig``'s own field defaults. The attention window is the one value
whose meaning differs between formats (``docs/architecture.md`` §1.3), so it is handled in code beside
the table.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal, Mapping, NamedTuple

from ..config import ModelConfig, QuantizationConfig
from ..errors import CheckpointError, LabelSchemeError
from ..labels import normalize_id2label

HF_MODEL_TYPE = "openai_privacy_filter"
OPF_MODEL_TYPE = "privacy_filter"
ConfigFormat = Literal["hf", "opf", "mlx"]


class Key(NamedTuple):
    field: str
    hf: tuple[str, ...]  # accepted HF keys, the first one is written; () when HF has none
    opf: str | None
    mlx: str | None = None  # extra alias an OpenMed MLX config carries beside the HF key


KEYS: tuple[Key, ...] = (
    Key("vocab_size", ("vocab_size",), "vocab_size"),
    Key("hidden_size", ("hidden_size",), "hidden_size"),
    Key("intermediate_size", ("intermediate_size",), "intermediate_size"),
    Key("num_hidden_layers", ("num_hidden_layers",), "num_hidden_layers"),
    Key("num_attention_heads", ("num_attention_heads",), "num_attention_heads"),
    Key("num_key_value_heads", ("num_key_value_heads",), "num_key_value_heads"),
    Key("head_dim", ("head_dim",), "head_dim"),
    Key("num_local_experts", ("num_local_experts",), "num_experts", "num_experts"),
    Key("num_experts_per_tok", ("num_experts_per_tok",), "experts_per_token", "experts_per_token"),
    Key("rms_norm_eps", ("rms_norm_eps",), "rms_norm_eps"),
    Key("rope_theta", ("rope_parameters.rope_theta", "rope_theta"), "rope_theta", "rope_theta"),
    Key("rope_factor", ("rope_parameters.factor",), "rope_scaling_factor", "rope_scaling_factor"),
    Key("rope_beta_fast", ("rope_parameters.beta_fast",), "rope_ntk_beta", "rope_ntk_beta"),
    Key("rope_beta_slow", ("rope_parameters.beta_slow",), "rope_ntk_alpha", "rope_ntk_alpha"),
    Key("rope_original_max_position_embeddings", ("rope_parameters.original_max_position_embeddings",),
        "initial_context_length", "initial_context_length"),
    Key("rope_truncate", ("rope_parameters.truncate",), None),
    Key("max_position_embeddings", ("max_position_embeddings",), "max_position_embeddings"),
    Key("swiglu_alpha", ("swiglu_alpha",), None),
    Key("swiglu_limit", ("swiglu_limit",), "swiglu_limit"),
    # HF heads always have a bias (transformers has no key for it); OpenMed records it, opf only when present.
    Key("classifier_bias", (), "unembedding_bias", "classifier_bias"),
    Key("dtype", ("dtype", "torch_dtype"), "param_dtype", "param_dtype"),
    Key("pad_token_id", ("pad_token_id",), None),
)
DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(ModelConfig)
                            if f.default is not dataclasses.MISSING}
# Fixed HF keys that transformers' save_pretrained writes too, so the file reads like its output.
HF_CONSTANTS: dict[str, Any] = {
    "architectures": ["OpenAIPrivacyFilterForTokenClassification"], "model_type": HF_MODEL_TYPE,
    "attention_bias": True, "attention_dropout": 0.0, "classifier_dropout": 0.0, "tie_word_embeddings": False,
    "initializer_range": 0.02, "output_router_logits": False, "router_aux_loss_coef": 0.001, "use_cache": True,
    "bos_token_id": None,
}
MLX_CONSTANTS: dict[str, Any] = {
    "encoding": "o200k_base", "_mlx_family": "openai-privacy-filter", "_mlx_model_type": HF_MODEL_TYPE,
    "_mlx_task": "token-classification", "_mlx_weights_format": "safetensors",
}


# -- reading -------------------------------------------------------------------------------------------------
def read_config(raw: Mapping[str, Any], *, id2label: Any = None) -> ModelConfig:
    """The ``ModelConfig`` of an HF, opf or OpenMed MLX ``config.json`` (the format is told by ``model_type``).

    ``id2label`` (a mapping or a list) overrides the file's own labels, e.g. from ``id2label.json``.
    """
    opf = raw.get("model_type") == OPF_MODEL_TYPE
    if not opf and "rope_parameters" not in raw and isinstance(raw.get("rope_scaling"), Mapping):
        raw = {**raw, "rope_parameters": raw["rope_scaling"]}  # the name older transformers releases wrote
    values: dict[str, Any] = {}
    for key in KEYS:
        names = (key.opf,) if opf else (*key.hf, key.mlx, key.opf)
        found = next((v for v in (_get(raw, n) for n in names if n) if v is not None), None)
        if found is not None:
            values[key.field] = _cast(key.field, found)
    if opf and "unembedding_bias" not in raw:
        values["classifier_bias"] = False  # opf writes the key only for a head that has a bias
    window = _opf_window(raw) if opf else _hf_window(raw)
    labels = parse_id2label(id2label if id2label is not None else raw.get("id2label"))
    return ModelConfig(**values, sliding_window=window, id2label=labels)


def _get(raw: Mapping[str, Any], path: str) -> Any:
    value: Any = raw
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _cast(field: str, value: Any) -> Any:
    kind = type(DEFAULTS[field])
    try:
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"config.json: field {field!r} must be {kind.__name__}; got {type(value).__name__}") \
            from exc


def _hf_window(raw: Mapping[str, Any]) -> int:
    window = int(raw.get("sliding_window", DEFAULTS["sliding_window"]))
    left, right = raw.get("bidirectional_left_context"), raw.get("bidirectional_right_context")
    if left is None and right is None:
        return window
    # Explicit bidirectional contexts (some MLX configs carry them) win over the HF field, except the value
    # OpenMed's converter derives as (sliding_window - 1) // 2: that misreads HF's one-sided window as opf's
    # band width (docs/architecture.md §1.3) and would halve the context the model was trained with.
    context = _symmetric_window(left, right)
    derived = "sliding_window" in raw and context == (window - 1) // 2 and context != window
    return window if derived else context


def _opf_window(raw: Mapping[str, Any]) -> int:
    window = _symmetric_window(raw.get("bidirectional_left_context"), raw.get("bidirectional_right_context"))
    # opf's own rule: the full band width equals left + right + 1 (HF's one-sided window is never stored here).
    if raw.get("sliding_window") is not None and int(raw["sliding_window"]) != 2 * window + 1:
        raise CheckpointError(
            f"opf config.json has sliding_window={raw['sliding_window']} but bidirectional contexts of {window}; "
            f"opf requires sliding_window = left + right + 1 = {2 * window + 1}")
    return window


def _symmetric_window(left: Any, right: Any) -> int:
    if left is None or right is None:
        raise CheckpointError(
            "config.json has neither a one-sided 'sliding_window' nor both 'bidirectional_left_context' and "
            "'bidirectional_right_context'")
    if int(left) != int(right):
        raise CheckpointError(
            f"only symmetric attention windows are supported; got bidirectional_left_context={left} and "
            f"bidirectional_right_context={right}")
    return int(left)


def parse_id2label(mapping: Any) -> tuple[str, ...]:
    """Label names by id (``labels.normalize_id2label``); a config without id2label has none."""
    if mapping is None:
        return ()
    try:
        return normalize_id2label(mapping)
    except LabelSchemeError as exc:
        raise CheckpointError(f"config.json: {exc}") from exc


def read_quantization(block: Any, *, where: str) -> QuantizationConfig:
    """The ``_mlx_quantization`` block (or the manifest's ``quantization``) found in file ``where``."""
    if not isinstance(block, Mapping):
        raise CheckpointError(f"the quantization block in {where} must be an object like "
                              '{"bits": 8, "group_size": 64}')
    if "bits" not in block:
        raise CheckpointError(f"the quantization block in {where} has no 'bits' entry; cannot tell the bit width")
    try:
        bits, group_size = int(block["bits"]), int(block.get("group_size", 64))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"the quantization block in {where} has non-integer bits or group_size") from exc
    try:
        return QuantizationConfig(bits=bits, group_size=group_size, mode=str(block.get("mode", "affine")))
    except CheckpointError as exc:
        raise CheckpointError(f"{where}: {exc}") from None


# -- writing -------------------------------------------------------------------------------------------------
def config_dict(config: ModelConfig, format: ConfigFormat, *,
                quantization: QuantizationConfig | None = None) -> dict[str, Any]:
    """The ``config.json`` content of ``config`` in ``format`` (for "mlx", with its ``quantization``)."""
    labels = {"id2label": {str(i): label for i, label in enumerate(config.id2label)}}
    if format == "opf":
        w = config.sliding_window
        out: dict[str, Any] = {key.opf: getattr(config, key.field) for key in KEYS if key.opf}
        if not config.classifier_bias:
            del out["unembedding_bias"]  # the base opf head has none, and its config has no such key
        return out | labels | {
            "model_type": OPF_MODEL_TYPE, "encoding": "o200k_base", "num_labels": config.num_labels,
            "sliding_window": 2 * w + 1, "bidirectional_context": True,
            "bidirectional_left_context": w, "bidirectional_right_context": w,
            "ner_class_names": list(config.id2label),
        }
    out = dict(HF_CONSTANTS)
    for key in KEYS:
        if key.hf:
            *parents, leaf = key.hf[0].split(".")
            node = out
            for part in parents:
                node = node.setdefault(part, {"rope_type": "yarn"})
            node[leaf] = getattr(config, key.field)
    out |= labels | {"sliding_window": config.sliding_window, "eos_token_id": config.pad_token_id,
                     "label2id": {label: i for i, label in enumerate(config.id2label)}}
    if format == "hf":
        return out
    # OpenMed's MLX runtime reads the opf-style aliases and sizes its head from num_labels (KeyError without it).
    # The contexts are written as the one-sided HF window so that it does not derive (sliding_window - 1) // 2.
    out |= {key.mlx: getattr(config, key.field) for key in KEYS if key.mlx}
    out |= MLX_CONSTANTS | {"num_labels": config.num_labels, "bidirectional_left_context": config.sliding_window,
                            "bidirectional_right_context": config.sliding_window}
    if quantization is not None:
        out["_mlx_quantization"] = quantization_block(quantization)
    return out


def quantization_block(quantization: QuantizationConfig) -> dict[str, Any]:
    """How config.json and openmed-mlx.json record the quantization (read back by ``read_quantization``)."""
    return {"bits": quantization.bits, "format": f"mlx-{quantization.bits}bit", "group_size": quantization.group_size}


__all__ = ["HF_MODEL_TYPE", "KEYS", "OPF_MODEL_TYPE", "config_dict", "parse_id2label", "quantization_block",
           "read_config", "read_quantization"]
