"""Seeded random checkpoints of any config, in every on-disk format, for tests and benchmarks.

Each tensor is drawn from its own generator (seeded by ``seed`` and the tensor name), so a tensor's values do not
depend on which other tensors were drawn, and the full-size model can be written one tensor at a time.
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from .checkpoint import SaveFormat, save_checkpoint
from .config import ModelConfig
from .checkpoint.formats import canonical_shapes
from .checkpoint.affine import QuantDtype, round_to_bfloat16

BASE_CLASSES = ("account_number", "private_address", "private_date", "private_email", "private_person",
                "private_phone", "private_url", "secret")
NEMOTRON_CLASSES = (
    "account_number", "age", "api_key", "bank_routing_number", "biometric_identifier", "blood_type",
    "certificate_license_number", "city", "company_name", "coordinate", "country", "county", "credit_debit_card",
    "customer_id", "cvv", "date", "date_of_birth", "date_time", "device_identifier", "education_level", "email",
    "employee_id", "employment_status", "fax_number", "first_name", "gender", "health_plan_beneficiary_number",
    "http_cookie", "ipv4", "ipv6", "language", "last_name", "license_plate", "mac_address",
    "medical_record_number", "national_id", "occupation", "password", "phone_number", "pin", "political_view",
    "postcode", "race_ethnicity", "religious_belief", "sexuality", "ssn", "state", "street_address", "swift_bic",
    "tax_id", "time", "unique_id", "url", "user_name", "vehicle_identifier")



def bioes_labels(classes: tuple[str, ...]) -> tuple[str, ...]:
    """``O`` then ``B-/I-/E-/S-<class>`` for each class, in the order the published checkpoints use."""
    return ("O",) + tuple(f"{prefix}-{name}" for name in classes for prefix in "BIES")


def tiny_config(**overrides: Any) -> ModelConfig:
    """A small config of the real architecture: hidden 64, 2 layers, 8 experts (top 4), 4 query / 2 KV heads of
    16 dims, window 4, 9 labels. The vocabulary stays 200064 so real tiktoken ids can be fed; pass
    ``vocab_size=...`` to shrink it when ids do not matter."""
    values: dict[str, Any] = dict(
        vocab_size=200064, hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, num_local_experts=8, num_experts_per_tok=4, sliding_window=4,
        id2label=bioes_labels(("private_email", "private_person")), dtype="float32")
    values.update(overrides)
    # HF's embedding asserts pad_token_id < vocab_size; keep <|endoftext|> when the vocabulary allows it.
    values.setdefault("pad_token_id", min(199999, values["vocab_size"] - 1))
    return ModelConfig(**values)


def full_config(**overrides: Any) -> ModelConfig:
    """The full-size Nemotron architecture (hidden 640, 8 layers, 128 experts, vocab 200064, 221 labels)."""
    values: dict[str, Any] = dict(id2label=bioes_labels(NEMOTRON_CLASSES), dtype="bfloat16")
    values.update(overrides)
    return ModelConfig(**values)


def _std(name: str, shape: tuple[int, ...], config: ModelConfig, classifier_scale: float) -> tuple[float, float]:
    """(mean, std) for one tensor: fan-in scaled weights so activations stay O(1) at any size."""
    if name.endswith("norm.weight"):
        return 1.0, 0.05
    if name.endswith("sinks"):
        return 0.0, 1.0
    if name == "model.embed_tokens.weight":
        return 0.0, 0.3
    if name == "score.weight":
        return 0.0, classifier_scale / np.sqrt(config.hidden_size)
    if name.endswith("bias"):
        return 0.0, 0.02
    fan_in = shape[-2] if name.endswith(("gate_up_proj", "down_proj")) else shape[-1]
    return 0.0, float(np.clip(1.0 / np.sqrt(fan_in), 0.02, 0.3))


class RandomStateDict(Mapping[str, np.ndarray]):
    """A canonical state dict whose float32 tensors are drawn on access (nothing is kept in memory)."""

    def __init__(self, config: ModelConfig, *, seed: int = 0, classifier_scale: float = 1.0) -> None:
        self.config, self.seed, self.classifier_scale = config, seed, classifier_scale
        self.shapes = canonical_shapes(config)

    def __getitem__(self, name: str) -> np.ndarray:
        shape = self.shapes[name]
        mean, std = _std(name, shape, self.config, self.classifier_scale)
        rng = np.random.default_rng([self.seed, zlib.crc32(name.encode("utf-8"))])
        values = rng.standard_normal(shape, dtype=np.float32)
        values *= np.float32(std)
        if mean:
            values += np.float32(mean)
        return values

    def __contains__(self, name: object) -> bool:
        return name in self.shapes

    def __iter__(self) -> Iterator[str]:
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)


def random_state_dict(config: ModelConfig, *, seed: int = 0, classifier_scale: float = 1.0) -> dict[str, np.ndarray]:
    """Seeded random canonical weights (numpy float32) for ``config``.

    ``classifier_scale`` multiplies the classifier weights; values around 10 give the wide logit margins of a
    trained model, so bfloat16 / 8-bit argmax agreement can be measured meaningfully.
    """
    return dict(RandomStateDict(config, seed=seed, classifier_scale=classifier_scale))


def write_random_checkpoint(dst: str | Path, config: ModelConfig, *, format: SaveFormat, seed: int = 0,
                            dtype: QuantDtype = "float32",
                            classifier_scale: float = 1.0) -> Path:
    """Write seeded random weights for ``config`` as a checkpoint folder in ``format``; returns the folder.

    Tensors are drawn and written one at a time, so the full-size config needs about one expert tensor of
    memory (~0.5 GB float32, a few times that while quantizing 8-bit), not the whole model. ``dtype`` is the
    stored dtype (the "mlx-bf16" layout written with dtype "float32" is an unquantized float32 MLX artifact).
    """
    weights = RandomStateDict(config, seed=seed, classifier_scale=classifier_scale)
    return save_checkpoint(weights, config, dst, format=format, dtype=dtype)


def margin_state_dict(config: ModelConfig, *, seed: int = 0, label_strength: float = 0.5) -> dict[str, np.ndarray]:
    """Random weights, rounded to bfloat16, whose logits have trained-like margins.

    Each vocabulary id leans towards one label (its embedding gets ``label_strength`` x that label's direction
    and the classifier reads those directions), so most tokens have a clear winner while attention and the
    experts still move the logits. Plain random heads have near-ties everywhere, where any rounding flips argmax;
    bf16 and 8-bit fidelity are measured on this model.
    """
    weights = random_state_dict(config, seed=seed)
    rng = np.random.default_rng(seed + 1)
    directions = rng.standard_normal((config.num_labels, config.hidden_size)).astype(np.float32)
    leaning = rng.integers(0, config.num_labels, config.vocab_size)
    weights["model.embed_tokens.weight"] = weights["model.embed_tokens.weight"] + label_strength * directions[leaning]
    weights["score.weight"] = directions / np.sqrt(config.hidden_size)
    return {k: v if k.endswith("sinks") else round_to_bfloat16(v) for k, v in weights.items()}


def random_inputs(vocab_size: int, batch: int, seq: int, *, seed: int,
                  pad_last: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded ``input_ids`` int64 (batch, seq) and ``attention_mask`` bool (batch, seq); the last row is
    right-padded by ``pad_last`` positions (id 0, mask False)."""
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(0, vocab_size, (batch, seq))
    attention_mask = np.ones((batch, seq), dtype=bool)
    if pad_last:
        attention_mask[-1, seq - pad_last:] = False
        input_ids[-1, seq - pad_last:] = 0
    return input_ids, attention_mask


__all__ = ["BASE_CLASSES", "NEMOTRON_CLASSES", "RandomStateDict", "bioes_labels", "full_config", "margin_state_dict",
           "random_inputs", "random_state_dict", "tiny_config", "write_random_checkpoint"]
