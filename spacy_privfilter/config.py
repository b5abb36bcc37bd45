"""Typed, frozen model and quantization configuration.

One ``ModelConfig`` describes the architecture whatever the file format; layers read
hyperparameters from it, never from dicts. ``sliding_window`` is always the *one-sided*
context (token i sees j iff ``abs(i - j) <= sliding_window``), HF's meaning. Which
``config.json`` key holds which field in each format is ``checkpoint/config_json.py``'s business.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .errors import CheckpointError

SUPPORTED_BITS = (2, 4, 8)
"""Code widths every reader handles: they pack whole codes into uint32 words and into bytes."""
SUPPORTED_GROUP_SIZES = (32, 64, 128)


@dataclass(frozen=True)
class QuantizationConfig:
    """Weight-only affine quantisation as written by MLX (``_mlx_quantization``)."""

    bits: int = 8
    group_size: int = 64
    mode: str = "affine"

    def __post_init__(self) -> None:
        if self.bits not in SUPPORTED_BITS:
            raise CheckpointError(f"quantization bits must be one of {_choices(SUPPORTED_BITS)}; got {self.bits!r}")
        if self.group_size not in SUPPORTED_GROUP_SIZES:
            raise CheckpointError(f"quantization group_size must be one of {_choices(SUPPORTED_GROUP_SIZES)}; "
                                  f"got {self.group_size!r}")
        if self.mode != "affine":
            raise CheckpointError(f"only 'affine' quantization is supported; got mode {self.mode!r}")


def _choices(values: tuple[int, ...]) -> str:
    return ", ".join(map(str, values))


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

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["id2label"] = list(self.id2label)
        return out

