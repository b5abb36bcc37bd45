"""HF, opf and OpenMed MLX configs read into one typed ModelConfig with HF's one-sided window, and back."""
from __future__ import annotations

import dataclasses

import pytest

from spacy_privfilter.checkpoint.config_json import KEYS, config_dict, read_config, read_quantization
from spacy_privfilter.config import SUPPORTED_BITS, ModelConfig, QuantizationConfig
from spacy_privfilter.errors import CheckpointError
from spacy_privfilter.testing import NEMOTRON_CLASSES, bioes_labels, full_config, tiny_config


def test_every_field_has_one_row_and_survives_every_format():
    """Each field is read and written by the one table (or by the window / label code beside it)."""
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    rows = [key.field for key in KEYS]
    assert len(rows) == len(set(rows)) and set(rows) | {"sliding_window", "id2label"} == fields
    unusual = tiny_config(vocab_size=300, rms_norm_eps=3e-6, rope_theta=1234.0, rope_factor=8.0, rope_beta_fast=16.0,
                          rope_beta_slow=2.0, rope_original_max_position_embeddings=512, max_position_embeddings=999,
                          swiglu_limit=5.0, classifier_bias=False, dtype="float32", sliding_window=6)
    for fmt in ("hf", "opf", "mlx"):
        back = read_config(config_dict(unusual, fmt))
        lost = {"hf": {"classifier_bias"}, "opf": {"rope_truncate", "swiglu_alpha", "pad_token_id"},
                "mlx": set()}[fmt]  # fields a format has no key for come back as the default
        for name in fields - lost:
            assert getattr(back, name) == getattr(unusual, name), (fmt, name)


def test_hf_dict_round_trips_and_matches_transformers():
    transformers = pytest.importorskip("transformers")
    config = full_config()
    assert read_config(config_dict(config, "hf")) == config
    theirs = transformers.OpenAIPrivacyFilterConfig(**config_dict(config, "hf"))
    assert read_config(theirs.to_dict()) == config
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
    raw = config_dict(config, "opf")
    assert raw["sliding_window"] == 257
    parsed = read_config(raw)
    assert parsed.sliding_window == 128
    assert parsed.num_local_experts == config.num_local_experts and parsed.rope_factor == config.rope_factor
    assert parsed.id2label == config.id2label and parsed.classifier_bias is config.classifier_bias
    # opf writes unembedding_bias only for a head with a bias; without the key there is none.
    no_bias = config_dict(config.with_updates(classifier_bias=False), "opf")
    assert "unembedding_bias" not in no_bias and read_config(no_bias).classifier_bias is False


@pytest.mark.parametrize("change,message", [
    ({"bidirectional_right_context": 64}, "only symmetric attention windows"),
    ({"sliding_window": 128}, "sliding_window = left \\+ right \\+ 1 = 257"),
    ({"bidirectional_left_context": None}, "neither a one-sided"),
])
def test_opf_window_errors(change, message):
    raw = {**config_dict(tiny_config(sliding_window=128), "opf"), **change}
    with pytest.raises(CheckpointError, match=message):
        read_config(raw)


def test_mlx_config_window_follows_hf_unless_explicit():
    config = tiny_config(sliding_window=128)
    raw = config_dict(config, "mlx", quantization=QuantizationConfig())
    assert read_config(raw).sliding_window == 128
    # A converted config without explicit contexts: HF's one-sided window (not OpenMed's (128 - 1) // 2 = 63).
    plain = {k: v for k, v in raw.items() if not k.startswith("bidirectional_")}
    assert read_config(plain).sliding_window == 128
    # OpenMed's converter writes (sliding_window - 1) // 2 as explicit contexts: still the trained one-sided window.
    assert read_config({**plain, "bidirectional_left_context": 63,
                                  "bidirectional_right_context": 63}).sliding_window == 128
    # Any other explicit context is taken as written.
    assert read_config({**plain, "bidirectional_left_context": 100,
                                  "bidirectional_right_context": 100}).sliding_window == 100


def test_id2label_forms_and_gaps():
    labels = bioes_labels(("email",))
    base = config_dict(tiny_config(), "hf")
    assert read_config({**base, "id2label": list(labels)}).id2label == labels
    shuffled = {str(i): label for i, label in reversed(list(enumerate(labels)))}
    assert read_config({**base, "id2label": shuffled}).id2label == labels
    with pytest.raises(CheckpointError, match="without gaps"):
        read_config({**base, "id2label": {"0": "O", "2": "S-email"}})


def test_quantization_config_is_read_never_guessed():
    block = {"bits": 8, "format": "mlx-8bit", "group_size": 64}
    assert read_quantization(block, where="config.json") == QuantizationConfig()
    with pytest.raises(CheckpointError, match="in config.json has no 'bits'"):
        read_quantization({"group_size": 64}, where="config.json")
    with pytest.raises(CheckpointError, match="group_size must be"):
        QuantizationConfig(bits=8, group_size=48)
    with pytest.raises(CheckpointError, match=f"bits must be one of {', '.join(map(str, SUPPORTED_BITS))}; got 3"):
        QuantizationConfig(bits=3)


def test_invalid_architectures_are_rejected():
    with pytest.raises(CheckpointError, match="multiple of"):
        tiny_config(num_attention_heads=5)
    with pytest.raises(CheckpointError, match="exceeds"):
        tiny_config(num_experts_per_tok=9)
    with pytest.raises(CheckpointError, match="positive integers: hidden_size"):
        tiny_config(hidden_size=0)
