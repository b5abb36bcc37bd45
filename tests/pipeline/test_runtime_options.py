"""``runtime_options``: checked at construction, passed to the runtime, part of the shared-model key, saved."""
from __future__ import annotations

import pytest
import spacy

from spacy_privfilter._compat import has_mlx
from spacy_privfilter.backends.base import RUNTIME_OPTIONS, check_runtime_options
from spacy_privfilter.cli.parser import build_parser
from spacy_privfilter.cli.scrub import filter_config
from spacy_privfilter.errors import ConfigError
from spacy_privfilter.pipeline.settings import FilterSettings

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def model_8bit(tiny_checkpoint):
    return tiny_checkpoint(("email",), format="mlx-8bit", seed=5)


def build(model, **options):
    nlp = spacy.blank("en")
    nlp.add_pipe("privacy_filter", config={"model": str(model), "backend": "torch", "runtime_options": options})
    return nlp


def experts_of(nlp) -> str:
    return type(nlp.get_pipe("privacy_filter").detector.backend.model.layers[0].mlp.experts).__name__


@pytest.mark.parametrize("options, message", [
    ({"quantised_experts": "keep"}, "unknown runtime option 'quantised_experts'.*valid options: quantized_experts, "
                                    "expert_precision, pack_experts, expert_kernel"),
    ({"quantized_experts": "lazy"}, "'quantized_experts' must be one of keep, dequantize; got lazy"),
    ({"expert_precision": "float64"}, "'expert_precision' must be one of auto, float32, bfloat16"),
    ({"pack_experts": 1}, "'pack_experts' must be one of null, true, false; got 1"),
    ({"pack_experts": "yes"}, "'pack_experts' must be one of null, true, false; got yes"),
    ({"expert_kernel": "fast"}, "'expert_kernel' must be one of auto, native, torch; got fast"),
])
def test_bad_options_fail_at_construction_naming_key_and_choices(options, message) -> None:
    with pytest.raises(ConfigError, match="privacy_filter: 'runtime_options': .*" + message):
        FilterSettings(model="some/model", backend="torch", runtime_options=options)
    nlp = spacy.blank("en")
    with pytest.raises(ConfigError, match=message):
        nlp.add_pipe("privacy_filter", config={"model": "some/model", "backend": "torch", "runtime_options": options})


def test_every_valid_value_is_accepted() -> None:
    for key, choices in RUNTIME_OPTIONS["torch"].items():
        for value in choices:
            assert FilterSettings(model="m", backend="torch", runtime_options={key: value}).runtime_options \
                == {key: value}


@pytest.mark.skipif(not has_mlx(), reason="mlx is not installed")
def test_mlx_rejects_torch_only_options_with_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="unknown runtime option 'pack_experts' for backend 'mlx' \\(pack_experts "
                                          "applies to the torch backend only\\); valid options: none"):
        FilterSettings(model="m", backend="mlx", runtime_options={"pack_experts": False})
    assert FilterSettings(model="m", backend="mlx").runtime_options == {}


def test_auto_accepts_an_option_some_runtime_takes() -> None:
    assert check_runtime_options("auto", {"quantized_experts": "keep"}) == {"quantized_experts": "keep"}
    with pytest.raises(ConfigError, match="unknown runtime option 'nope' for backend 'auto'"):
        check_runtime_options("auto", {"nope": 1})


def test_options_reach_the_runtime_and_key_the_shared_model(model_8bit) -> None:
    kept, dequantized = build(model_8bit, expert_kernel="torch"), build(model_8bit, quantized_experts="dequantize",
                                                                         expert_kernel="torch")
    assert experts_of(kept) == "QuantizedExperts"
    assert experts_of(dequantized) != "QuantizedExperts"
    # equal settings share one loaded model; different runtime options do not
    again = build(model_8bit, quantized_experts="dequantize", expert_kernel="torch")
    assert again.get_pipe("privacy_filter").detector.backend is dequantized.get_pipe("privacy_filter").detector.backend
    assert kept.get_pipe("privacy_filter").detector.backend is not \
        dequantized.get_pipe("privacy_filter").detector.backend


def test_saved_pipeline_keeps_its_options(model_8bit, tmp_path) -> None:
    build(model_8bit, quantized_experts="dequantize", pack_experts=False).to_disk(tmp_path / "nlp")
    assert "runtime_options" in (tmp_path / "nlp" / "config.cfg").read_text(encoding="utf-8")
    loaded = spacy.load(tmp_path / "nlp")
    assert loaded.get_pipe("privacy_filter").settings.runtime_options == {"quantized_experts": "dequantize",
                                                                          "pack_experts": False}
    assert experts_of(loaded) not in ("QuantizedExperts", "PackedExperts")


@pytest.mark.parametrize("command", ["redact", "detect"])
def test_cli_flags_become_runtime_options(command) -> None:
    parser = build_parser()
    assert "runtime_options" not in filter_config(parser.parse_args([command, "in.txt"]))
    args = parser.parse_args([command, "in.txt", "--quantized-experts", "dequantize", "--expert-precision",
                              "float32", "--no-pack-experts"])
    assert filter_config(args)["runtime_options"] == {"quantized_experts": "dequantize",
                                                      "expert_precision": "float32", "pack_experts": False}
    assert filter_config(parser.parse_args([command, "in.txt", "--pack-experts"]))["runtime_options"] == \
        {"pack_experts": True}
    assert filter_config(parser.parse_args([command, "in.txt", "--expert-kernel", "torch"]))["runtime_options"] == \
        {"expert_kernel": "torch"}
    with pytest.raises(SystemExit):
        parser.parse_args([command, "in.txt", "--quantized-experts", "lazy"])


def test_evaluate_takes_the_flags_too() -> None:
    args = build_parser().parse_args(["evaluate", "gold.jsonl", "--quantized-experts", "dequantize"])
    assert filter_config(args)["runtime_options"] == {"quantized_experts": "dequantize"}


@pytest.mark.skipif(not has_mlx(), reason="mlx is not installed")
def test_cli_refuses_a_torch_only_flag_on_mlx_as_a_usage_error(tmp_path, capsys) -> None:
    from spacy_privfilter.cli.parser import EXIT_USAGE, main

    (tmp_path / "in.txt").write_text("Jane Doe", encoding="utf-8")
    code = main(["detect", str(tmp_path / "in.txt"), "--model", str(tmp_path), "--backend", "mlx",
                 "--no-pack-experts", "-o", str(tmp_path / "out.jsonl")])
    assert code == EXIT_USAGE
    assert "pack_experts applies to the torch backend only" in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()
