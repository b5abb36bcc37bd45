"""HF -> OpenMed MLX artifact conversion: layout, round trips, command line, and interop with openmed 3.1.0.

Tolerances: bf16 artifacts reproduce the source's logits up to float noise (<= 1e-5); an 8-bit artifact
reproduces in-memory 8-bit quantization (<= 1e-5) and agrees with bf16 on >= 99% of argmax tokens
(margin-scaled model). Interop: OpenMed-written artifacts give our conversion's logits (<= 1e-5).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core", reason="mlx is not installed (pip install 'mlx[cpu]' on Linux)")
pytestmark = pytest.mark.mlx

from spacy_privfilter.backends.mlx_backend import load  # noqa: E402
from spacy_privfilter.checkpoint import inspect_checkpoint, save_checkpoint  # noqa: E402
from spacy_privfilter.checkpoint.convert import convert, main  # noqa: E402
from spacy_privfilter.errors import ConfigError, ModelNotFoundError  # noqa: E402
from spacy_privfilter.testing import tiny_config, write_random_checkpoint  # noqa: E402

from spacy_privfilter.testing import margin_state_dict, random_inputs  # noqa: E402

# The sequence (30 tokens) is longer than the window (8) and than the (8 - 1) // 2 = 3 that OpenMed's converter
# writes into config.json as explicit contexts, so the interop checks also prove that such artifacts run with
# the trained one-sided window here.
CONFIG = dict(vocab_size=2000, hidden_size=128, intermediate_size=128, num_local_experts=16,
              num_hidden_layers=3, sliding_window=8)
IDS, MASK = random_inputs(2000, 2, 30, seed=1, pad_last=6)


def _logits(folder: Path, **options) -> np.ndarray:
    return load(inspect_checkpoint(folder), device="cpu", **options).logits(IDS, MASK)


@pytest.fixture(scope="module")
def hf_bf16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = tiny_config(**CONFIG)
    return save_checkpoint(margin_state_dict(config, seed=3), config, tmp_path_factory.mktemp("src") / "hf",
                           format="hf", dtype="bfloat16")


def test_bf16_artifact_has_the_openmed_layout_and_reproduces_the_source(hf_bf16: Path,
                                                                        tmp_path: Path) -> None:
    out = convert(hf_bf16, tmp_path / "bf16", to="mlx-bf16")
    assert {p.name for p in out.iterdir()} >= {"weights.safetensors", "config.json", "id2label.json",
                                               "openmed-mlx.json"}
    weights = mx.load(str(out / "weights.safetensors"))
    assert weights["block.0.attn.qkv.weight"].shape == (4 * 16 + 2 * 2 * 16, 128)  # fused q | k | v rows
    assert weights["block.2.mlp.swiglu.weight"].shape == (16, 128, 256)  # experts [E, in, out]
    assert weights["embedding.weight"].dtype == mx.bfloat16 and weights["norm.scale"].dtype == mx.float32
    config = json.loads((out / "config.json").read_text())
    assert config["_mlx_weights_format"] == "safetensors" and "_mlx_quantization" not in config
    manifest = json.loads((out / "openmed-mlx.json").read_text())
    assert manifest["format"] == "openmed-mlx" and manifest["formats"] == ["mlx-fp"]
    assert np.abs(_logits(out) - _logits(hf_bf16))[MASK].max() <= 1e-5


def test_8bit_artifact_round_trips_and_agrees_with_bf16(hf_bf16: Path, tmp_path: Path) -> None:
    out = convert(hf_bf16, tmp_path / "q8", to="mlx-8bit")
    config = json.loads((out / "config.json").read_text())
    assert config["_mlx_quantization"] == {"bits": 8, "format": "mlx-8bit", "group_size": 64}
    weights = mx.load(str(out / "weights.safetensors"))
    # packed and transposed: [E, out, in / 4]
    assert weights["block.0.mlp.swiglu.weight"].shape == (16, 256, 128 // 4)
    assert weights["block.0.mlp.swiglu.scales"].dtype == mx.bfloat16
    converted = _logits(out)
    assert np.abs(converted - _logits(hf_bf16, quantize=8))[MASK].max() <= 1e-5
    ids, mask = random_inputs(2000, 1, 1200, seed=7)
    q8 = load(inspect_checkpoint(out), device="cpu").logits(ids, mask)
    bf16 = load(inspect_checkpoint(hf_bf16), device="cpu").logits(ids, mask)
    agreement = float((q8.argmax(-1) == bf16.argmax(-1)).mean())
    print(f"converted 8-bit artifact vs bf16 argmax agreement: {agreement:.4f}")
    assert agreement >= 0.99


def test_command_line(hf_bf16: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(hf_bf16), str(tmp_path / "cli"), "--to", "mlx-8bit"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "cli")
    assert inspect_checkpoint(tmp_path / "cli").quantization is not None
    assert main([str(tmp_path / "absent"), str(tmp_path / "x")]) == 1
    assert "error:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(hf_bf16), str(tmp_path / "y"), "--to", "gguf"])


def test_bad_requests_are_refused(hf_bf16: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="to must be one of mlx-bf16, mlx-8bit"):
        convert(hf_bf16, tmp_path / "a", to="mlx-4bit")
    with pytest.raises(ConfigError, match="must differ from the source"):
        convert(hf_bf16, hf_bf16, to="mlx-bf16")
    q8 = write_random_checkpoint(tmp_path / "q8", tiny_config(vocab_size=300), format="mlx-8bit")
    with pytest.raises(ConfigError, match="already quantized"):
        convert(q8, tmp_path / "b", to="mlx-bf16")
    with pytest.raises(ModelNotFoundError):
        convert(tmp_path / "missing", tmp_path / "c")


# -- interop with OpenMed's own converter and loader -------------------------------------------------------
@pytest.fixture(scope="module")
def openmed():
    pytest.importorskip("transformers", reason="OpenMed's converter loads the HF model with transformers")
    convert_module = pytest.importorskip("openmed.mlx.convert", reason="openmed 3.1.0 is not installed")
    models = pytest.importorskip("openmed.mlx.models")
    logging.getLogger("openmed").setLevel(logging.ERROR)  # it warns that the tiny checkpoint has no tokenizer
    return convert_module.convert, models.load_model


def test_openmed_artifacts_load_here_with_our_conversions_logits(openmed, hf_bf16: Path,
                                                                  tmp_path: Path) -> None:
    om_convert, _ = openmed
    # bf16: OpenMed writes float32 copies of the bf16 values (and copies HF's natural-log sinks unchanged,
    # which we read as HF-derived), so both artifacts hold the same numbers.
    theirs = Path(om_convert(str(hf_bf16), str(tmp_path / "om-bf16"), quantize_bits=None))
    ours = convert(hf_bf16, tmp_path / "ours-bf16", to="mlx-bf16")
    assert np.abs(_logits(theirs, dtype="float32") - _logits(ours, dtype="float32"))[MASK].max() <= 1e-5
    # 8-bit: OpenMed quantizes float32 weights (float32 scales); our quantize-on-load of the same float32
    # source must give bit-identical codes, hence the same logits.
    config = tiny_config(**CONFIG)
    hf_f32 = save_checkpoint(margin_state_dict(config, seed=4), config, tmp_path / "hf32", format="hf",
                             dtype="float32")
    theirs_q8 = Path(om_convert(str(hf_f32), str(tmp_path / "om-q8"), quantize_bits=8))
    assert inspect_checkpoint(theirs_q8).quantization.bits == 8
    assert np.abs(_logits(theirs_q8) - _logits(hf_f32, quantize=8))[MASK].max() <= 1e-5


def test_openmed_loader_reads_our_artifacts(openmed, tmp_path: Path) -> None:
    from mlx.utils import tree_map

    _, om_load = openmed
    config = tiny_config(**CONFIG)
    weights = margin_state_dict(config, seed=5)
    for key in [k for k in weights if k.endswith("sinks")]:
        # OpenMed's runtime multiplies sinks by ln 2 (opf units); zero means the same in both units
        weights[key] = weights[key] * 0
    hf = save_checkpoint(weights, config, tmp_path / "hf", format="hf", dtype="bfloat16")
    ids, mask = mx.array(IDS.astype(np.int32)), mx.array(MASK)
    bf16 = convert(hf, tmp_path / "bf16", to="mlx-bf16")
    model = om_load(bf16)  # strict: every name and shape must match OpenMed's module tree
    model.update(tree_map(lambda a: a.astype(mx.float32), model.parameters()))  # bf16 -> f32 is exact
    theirs = np.array(model(ids, attention_mask=mask).astype(mx.float32))
    assert np.abs(theirs - _logits(bf16, dtype="float32"))[MASK].max() <= 1e-4
    q8 = convert(hf, tmp_path / "q8", to="mlx-8bit")
    theirs = np.array(om_load(q8)(ids, attention_mask=mask).astype(mx.float32))
    assert float((theirs.argmax(-1) == _logits(q8).argmax(-1))[MASK].mean()) >= 0.99
