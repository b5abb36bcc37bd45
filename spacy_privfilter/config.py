"""Typed, frozen model configuration read from a checkpoint's ``config.json``.

One ``ModelConfig`` describes the architecture whatever the file format; layers read
hyperparameters from it, never from dicts. ``sliding_window`` is always the *one-sided*
context (token i sees j iff ``abs(i - j) <= sliding_window``), which is HF's meaning; the
original opf format calls the full band width ``sliding_window`` and is converted here.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping

from .errors import CheckpointError

HF_MODEL_TYPE = "openai_privacy_filter"
OPF_MODEL_TYPE = "privacy_filter"


@dataclass(frozen=True)
class QuantizationConfig:
    """Weight-only affine quantisation as written by MLX (``_mlx_quantization``)."""

    bits: int = 8
    group_size: int = 64
    mode: str = "affine"

    def __post_init__(self) -> None:
        if self.bits not in (2, 3, 4, 5, 6, 8):
            raise CheckpointError(f"quantization bits must be one of 2, 3, 4, 5, 6, 8; got {self.bits!r}")
        if self.group_size not in (32, 64, 128):
            raise CheckpointError(f"quantization group_size must be 32, 64 or 128; got {self.group_size!r}")
        if self.mode != "affine":
            raise CheckpointError(f"only 'affine' quantization is supported; got mode {self.mode!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "QuantizationConfig":
        try:
            return cls(bits=int(data["bits"]), group_size=int(data.get("group_size", 64)),
                       mode=str(data.get("mode", "affine")))
        except KeyError as exc:
            raise CheckpointError("_mlx_quantization has no 'bits' entry; cannot tell the bit width") from exc


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 200064
    hidden_size: int = 640
    intermediate_size: int = 640
    num_hidden_layers: int = 8
    num_attention_heads: int = 14
    num_key_value_heads: int = 2
    head_dim: int = 64
    num_local_experts: int = 128
    num_experts_per_tok: int = 4
    sliding_window: int = 128
    rms_norm_eps: float = 1e-5
    rope_theta: float = 150000.0
    rope_factor: float = 32.0
    rope_beta_fast: float = 32.0
    rope_beta_slow: float = 1.0
    rope_original_max_position_embeddings: int = 4096
    rope_truncate: bool = False
    max_position_embeddings: int = 131072
    swiglu_alpha: float = 1.702
    swiglu_limit: float = 7.0
    classifier_bias: bool = True
    id2label: tuple[str, ...] = field(default_factory=tuple)
    dtype: str = "bfloat16"
    pad_token_id: int = 199999

    def __post_init__(self) -> None:
        positive = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                    "num_key_value_heads", "head_dim", "num_local_experts", "num_experts_per_tok", "sliding_window")
        bad = [name for name in positive if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0]
        if bad:
            raise CheckpointError(f"config values must be positive integers: {', '.join(bad)}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise CheckpointError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})")
        if self.num_experts_per_tok > self.num_local_experts:
            raise CheckpointError(
                f"num_experts_per_tok ({self.num_experts_per_tok}) exceeds num_local_experts "
                f"({self.num_local_experts})")

    # -- derived ---------------------------------------------------------------------------
    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @property
    def receptive_field(self) -> int:
        """Tokens on each side that can influence one token's logits (layers x window)."""
        return self.num_hidden_layers * self.sliding_window

    def with_updates(self, **changes: Any) -> "ModelConfig":
        return replace(self, **changes)

    # -- parsing ---------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, id2label: Mapping[Any, str] | None = None) -> "ModelConfig":
        """Read an HF, opf or OpenMed-MLX ``config.json`` (the format is told by its keys)."""
        if data.get("model_type") == OPF_MODEL_TYPE:
            return cls._from_opf(data, id2label)
        return cls._from_hf(data, id2label)

    @classmethod
    def _from_hf(cls, d: Mapping[str, Any], id2label: Mapping[Any, str] | None) -> "ModelConfig":
        rope = dict(d.get("rope_parameters") or d.get("rope_scaling") or {})
        window = int(d.get("sliding_window", 128))
        # An explicit bidirectional context (some MLX configs carry one) wins over the HF field, except the value
        # OpenMed's converter derives as (sliding_window - 1) // 2: that reads HF's one-sided window as opf's band
        # width (trap D2 of the spec) and would halve the context the model was trained with.
        if d.get("bidirectional_left_context") is not None or d.get("bidirectional_right_context") is not None:
            context = _symmetric_window(d.get("bidirectional_left_context"), d.get("bidirectional_right_context"))
            derived = "sliding_window" in d and context == (window - 1) // 2 and context != window
            if not derived:
                window = context
        return cls(
            vocab_size=int(d.get("vocab_size", 200064)),
            hidden_size=int(d.get("hidden_size", 640)),
            intermediate_size=int(d.get("intermediate_size", 640)),
            num_hidden_layers=int(d.get("num_hidden_layers", 8)),
            num_attention_heads=int(d.get("num_attention_heads", 14)),
            num_key_value_heads=int(d.get("num_key_value_heads", 2)),
            head_dim=int(d.get("head_dim", 64)),
            num_local_experts=int(d.get("num_local_experts", d.get("num_experts", 128))),
            num_experts_per_tok=int(d.get("num_experts_per_tok", d.get("experts_per_token", 4))),
            sliding_window=window,
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-5)),
            rope_theta=float(rope.get("rope_theta", d.get("rope_theta", 150000.0))),
            rope_factor=float(rope.get("factor", 32.0)),
            rope_beta_fast=float(rope.get("beta_fast", 32.0)),
            rope_beta_slow=float(rope.get("beta_slow", 1.0)),
            rope_original_max_position_embeddings=int(rope.get("original_max_position_embeddings", 4096)),
            rope_truncate=bool(rope.get("truncate", False)),
            max_position_embeddings=int(d.get("max_position_embeddings", 131072)),
            swiglu_alpha=float(d.get("swiglu_alpha", 1.702)),
            swiglu_limit=float(d.get("swiglu_limit", 7.0)),
            classifier_bias=bool(d.get("classifier_bias", d.get("unembedding_bias", True))),
            id2label=_id2label_tuple(id2label if id2label is not None else d.get("id2label")),
            dtype=str(d.get("dtype") or d.get("torch_dtype") or d.get("param_dtype") or "bfloat16"),
            pad_token_id=int(d.get("pad_token_id") if d.get("pad_token_id") is not None else 199999),
        )

    @classmethod
    def _from_opf(cls, d: Mapping[str, Any], id2label: Mapping[Any, str] | None) -> "ModelConfig":
        window = _symmetric_window(d.get("bidirectional_left_context"), d.get("bidirectional_right_context"))
        # opf's own rule: the full band width equals left + right + 1 (HF's one-sided window is never stored here).
        if d.get("sliding_window") is not None and int(d["sliding_window"]) != 2 * window + 1:
            raise CheckpointError(
                f"opf config.json has sliding_window={d['sliding_window']} but bidirectional contexts of {window}; "
                f"opf requires sliding_window = left + right + 1 = {2 * window + 1}")
        labels = id2label if id2label is not None else d.get("id2label")
        return cls(
            vocab_size=int(d.get("vocab_size", 200064)),
            hidden_size=int(d["hidden_size"]),
            intermediate_size=int(d["intermediate_size"]),
            num_hidden_layers=int(d["num_hidden_layers"]),
            num_attention_heads=int(d["num_attention_heads"]),
            num_key_value_heads=int(d["num_key_value_heads"]),
            head_dim=int(d["head_dim"]),
            num_local_experts=int(d["num_experts"]),
            num_experts_per_tok=int(d["experts_per_token"]),
            sliding_window=window,
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-5)),
            rope_theta=float(d.get("rope_theta", 150000.0)),
            rope_factor=float(d.get("rope_scaling_factor", 32.0)),
            rope_beta_fast=float(d.get("rope_ntk_beta", 32.0)),
            rope_beta_slow=float(d.get("rope_ntk_alpha", 1.0)),
            rope_original_max_position_embeddings=int(d.get("initial_context_length", 4096)),
            max_position_embeddings=int(d.get("max_position_embeddings", 131072)),
            swiglu_limit=float(d.get("swiglu_limit", 7.0)),
            classifier_bias=bool(d.get("classifier_bias", d.get("unembedding_bias", False))),
            id2label=_id2label_tuple(labels),
            dtype=str(d.get("param_dtype", "bfloat16")),
        )

    def to_hf_dict(self) -> dict[str, Any]:
        """The HF ``config.json`` content for this configuration (what ``save_pretrained`` writes)."""
        return {
            "architectures": ["OpenAIPrivacyFilterForTokenClassification"],
            "model_type": HF_MODEL_TYPE,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "num_local_experts": self.num_local_experts,
            "num_experts_per_tok": self.num_experts_per_tok,
            "sliding_window": self.sliding_window,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_parameters": {
                "rope_type": "yarn", "rope_theta": self.rope_theta, "factor": self.rope_factor,
                "beta_fast": self.rope_beta_fast, "beta_slow": self.rope_beta_slow,
                "original_max_position_embeddings": self.rope_original_max_position_embeddings,
                "truncate": self.rope_truncate,
            },
            "max_position_embeddings": self.max_position_embeddings,
            "swiglu_alpha": self.swiglu_alpha,
            "swiglu_limit": self.swiglu_limit,
            "attention_bias": True,
            "attention_dropout": 0.0,
            "classifier_dropout": 0.0,
            "tie_word_embeddings": False,
            # Training-only fields transformers writes too; kept so the file reads like save_pretrained's.
            "initializer_range": 0.02,
            "output_router_logits": False,
            "router_aux_loss_coef": 0.001,
            "use_cache": True,
            "pad_token_id": self.pad_token_id,
            "eos_token_id": self.pad_token_id,
            "bos_token_id": None,
            "dtype": self.dtype,
            "id2label": {str(i): label for i, label in enumerate(self.id2label)},
            "label2id": {label: i for i, label in enumerate(self.id2label)},
        }

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["id2label"] = list(self.id2label)
        return out


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


def _id2label_tuple(mapping: Any) -> tuple[str, ...]:
    if mapping is None:
        return ()
    if isinstance(mapping, (list, tuple)):
        return tuple(str(x) for x in mapping)
    try:
        items = sorted(((int(k), str(v)) for k, v in dict(mapping).items()))
    except (TypeError, ValueError) as exc:
        raise CheckpointError("id2label keys must be integers (or strings of integers)") from exc
    ids = [i for i, _ in items]
    if ids != list(range(len(ids))):
        raise CheckpointError(f"id2label ids must be 0..{len(ids) - 1} without gaps; got {len(ids)} ids "
                              f"ranging {ids[0] if ids else None}..{ids[-1] if ids else None}")
    return tuple(label for _, label in items)


LN2 = math.log(2.0)
