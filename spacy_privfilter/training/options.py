"""Options of fine-tuning (torch-free, so that they can be built and checked without the torch extra)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from ..errors import ConfigError

TrainMode = Literal["head", "lora", "full"]
Precision = Literal["auto", "float32", "bfloat16"]
SaveDtype = Literal["float32", "bfloat16"]
DEFAULT_LEARNING_RATES = {"head": 1e-3, "lora": 2e-4, "full": 2e-5}


@dataclass(frozen=True)
class TrainConfig:
    """What and how to train. ``learning_rate`` None picks a default per mode (head 1e-3, lora 2e-4, full 2e-5);
    ``precision`` auto uses bf16 autocast when the model runs in bf16; ``save_dtype`` float32 keeps small
    merged adapter updates that bf16 rounding would erase; ``cache_features`` (head mode) keeps the frozen
    model's output per training token (4 x hidden size bytes: 2.5 KB for the full model) so that only the
    first epoch runs the model."""

    mode: TrainMode = "lora"
    epochs: int = 3
    batch_size: int = 8
    max_tokens: int = 256
    learning_rate: float | None = None
    lora_rank: int = 8
    lora_alpha: float = 16.0
    dev_fraction: float = 0.1
    patience: int = 2
    extend_labels: bool = False
    gradient_checkpointing: bool = True
    precision: Precision = "auto"
    seed: int = 0
    calibrate: bool = True
    save_dtype: SaveDtype = "float32"
    cache_features: bool = True

    def __post_init__(self) -> None:
        for name, choices in (("mode", get_args(TrainMode)), ("precision", get_args(Precision)),
                              ("save_dtype", get_args(SaveDtype))):
            if getattr(self, name) not in choices:
                raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {getattr(self, name)!r}")
        for name in ("epochs", "batch_size", "max_tokens", "lora_rank", "patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer; got {value!r}")
        if self.learning_rate is not None and not (isinstance(self.learning_rate, (int, float))
                                                   and 0 < self.learning_rate < 1):
            raise ConfigError(f"learning_rate must be in (0, 1) or None; got {self.learning_rate!r}")
        if not 0 <= self.dev_fraction < 1:
            raise ConfigError(f"dev_fraction must be in [0, 1); got {self.dev_fraction!r}")

    @property
    def lr(self) -> float:
        return self.learning_rate or DEFAULT_LEARNING_RATES[self.mode]
