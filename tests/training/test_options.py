"""TrainConfig checks its values and names the valid choices."""
from __future__ import annotations

import pytest

from spacy_privfilter.errors import ConfigError
from spacy_privfilter.training import TrainConfig


@pytest.mark.parametrize("changes, message", [
    ({"mode": "adapter"}, "head, lora, full"),
    ({"precision": "fp8"}, "auto, float32, bfloat16"),
    ({"epochs": 0}, "epochs"),
    ({"batch_size": True}, "batch_size"),
    ({"learning_rate": 3.0}, "learning_rate"),
    ({"dev_fraction": 1.0}, "dev_fraction"),
])
def test_bad_values_are_config_errors(changes, message) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**changes)


def test_learning_rate_defaults_per_mode() -> None:
    assert [TrainConfig(mode=m).lr for m in ("head", "lora", "full")] == [1e-3, 2e-4, 2e-5]
    assert TrainConfig(mode="head", learning_rate=0.05).lr == 0.05
