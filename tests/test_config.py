"""ModelConfig reads HF, opf and OpenMed MLX configs into one typed config with HF's one-sided window."""
from __future__ import annotations

import pytest

from spacy_privfilter.config import ModelConfig, QuantizationConfig
from spacy_privfilter.errors import CheckpointError
from spacy_privfilter.checkpoint.formats import mlx_config_dict, opf_config_dict
from spacy_privfilter.testing import NEMOTRON_CLASSES, bioes_labels, full_config, tiny_config


def test_hf_dict_round_trips_and_matches_transformers():
    transformers = pytest.importorskip("transformers")
    config = full_config()
    assert ModelConfig.from_dict(config.to_hf_dict()) == config
    theirs = transformers.OpenAIPrivacyFilterConfig(**config.to_hf_dict())
    assert ModelConfig.from_dict(theirs.to_dict()) == config
    assert (theirs.sliding_window, theirs.num_local_experts, theirs.head_dim) == (128, 128, 64)
    assert theirs.rope_parameters["factor"] == 32.0 and theirs.rope_parameters["rope_theta"] == 150000.0
    assert theirs.num_labels == 221 and theirs.id2label[97] == "B-first_name"


def test_full_config_is_the_published_architecture():
    config = full_config()
    assert config.num_labels == 1 + 4 * len(NEMOTRON_CLASSES) == 221
    assert config.id2label[-1] == "S-vehicle_identifier"
    assert (config.hidden_size, config.num_hidden_layers, config.num_local_experts, config.vocab_size) == \
        (640, 8, 128, 200064)
    assert config.receptive_field == 1024


def test_opf_config_uses_the_full_band_width():
    config = tiny_config(sliding_window=128)
    raw = opf_config_dict(config)
    assert raw["sliding_window"] == 257
    parsed = ModelConfig.from_dict(raw)
    assert parsed.sliding_window == 128
    assert parsed.num_local_experts == config.num_local_experts and parsed.rope_factor == config.rope_factor
    assert parsed.id2label == config.id2label and parsed.classifier_bias is False


@pytest.mark.parametrize("change,message", [
    ({"bidirectional_right_context": 64}, "only symmetric attention windows"),
    ({"sliding_window": 128}, "sliding_window = left \\+ right \\+ 1 = 257"),
    ({"bidirectional_left_context": None}, "neither a one-sided"),
])
def test_opf_window_errors(change, message):
    raw = {**opf_config_dict(tiny_config(sliding_window=128)), **change}
    with pytest.raises(CheckpointError, match=message):
        ModelConfig.from_dict(raw)


def test_mlx_config_window_follows_hf_unless_explicit():
    config = tiny_config(sliding_window=128)
    raw = mlx_config_dict(config, QuantizationConfig(), classifier_bias=True)
    assert ModelConfig.from_dict(raw).sliding_window == 128
    # A converted config without explicit contexts: HF's one-sided window (not OpenMed's (128 - 1) // 2 = 63).
    plain = {k: v for k, v in raw.items() if not k.startswith("bidirectional_")}
    assert ModelConfig.from_dict(plain).sliding_window == 128
    # OpenMed's converter writes (sliding_window - 1) // 2 as explicit contexts: still the trained one-sided window.
    assert ModelConfig.from_dict({**plain, "bidirectional_left_context": 63,
                                  "bidirectional_right_context": 63}).sliding_window == 128
    # Any other explicit context is taken as written.
    assert ModelConfig.from_dict({**plain, "bidirectional_left_context": 100,
                                  "bidirectional_right_context": 100}).sliding_window == 100


def test_id2label_forms_and_gaps():
    labels = bioes_labels(("email",))
    base = tiny_config().to_hf_dict()
    assert ModelConfig.from_dict({**base, "id2label": list(labels)}).id2label == labels
    shuffled = {str(i): label for i, label in reversed(list(enumerate(labels)))}
    assert ModelConfig.from_dict({**base, "id2label": shuffled}).id2label == labels
    with pytest.raises(CheckpointError, match="without gaps"):
        ModelConfig.from_dict({**base, "id2label": {"0": "O", "2": "S-email"}})


def test_quantization_config_is_read_never_guessed():
    assert QuantizationConfig.from_dict({"bits": 8, "format": "mlx-8bit", "group_size": 64}) == QuantizationConfig()
    with pytest.raises(CheckpointError, match="no 'bits'"):
        QuantizationConfig.from_dict({"group_size": 64})
    with pytest.raises(CheckpointError, match="group_size must be"):
        QuantizationConfig(bits=8, group_size=48)


def test_invalid_architectures_are_rejected():
    with pytest.raises(CheckpointError, match="multiple of"):
        tiny_config(num_attention_heads=5)
    with pytest.raises(CheckpointError, match="exceeds"):
        tiny_config(num_experts_per_tok=9)
    with pytest.raises(CheckpointError, match="positive integers: hidden_size"):
        tiny_config(hidden_size=0)
