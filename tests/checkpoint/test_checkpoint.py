"""Checkpoint formats: every format round-trips to the same canonical tensors, files have the real layouts,
transformers loads the HF output, and every broken checkpoint fails with an error naming the problem."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from spacy_privfilter.checkpoint import affine as quant
from spacy_privfilter.checkpoint import QuantizedWeight, inspect_checkpoint, load_state_dict, save_checkpoint
from spacy_privfilter.errors import CheckpointError
from spacy_privfilter.labels import BIAS_KEYS
from spacy_privfilter.checkpoint.safetensors_io import PendingTensor, read_header, read_numpy, write_safetensors
from spacy_privfilter.testing import random_state_dict, tiny_config, write_random_checkpoint

CONFIG = tiny_config(vocab_size=1000)  # tiktoken ids are not needed here; keeps files ~0.5 MB
SEED = 7
FORMATS = ("hf", "opf", "mlx-bf16", "mlx-8bit")


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    return random_state_dict(CONFIG, seed=SEED)


def _expected(reference: dict[str, np.ndarray], name: str, fmt: str, dtype: str) -> np.ndarray:
    """What loading must return for ``name``: the reference, rounded to bfloat16 where the format stores it so."""
    value = reference[name]
    kept_f32 = name.endswith("sinks") or (fmt.startswith("mlx") and name.endswith("norm.weight"))
    return quant.round_to_bfloat16(value) if dtype == "bfloat16" and not kept_f32 else value


def _dense(value, name: str) -> np.ndarray:
    if isinstance(value, QuantizedWeight):
        out = quant.dequantize(value.weight, value.scales, value.biases, bits=value.bits, group_size=value.group_size)
        return np.swapaxes(out, -1, -2) if name.endswith(("gate_up_proj", "down_proj")) else out
    return np.asarray(value)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("fmt", ["hf", "opf", "mlx-bf16"])
def test_dense_formats_round_trip(tmp_path, reference, fmt, dtype):
    info = inspect_checkpoint(write_random_checkpoint(tmp_path, CONFIG, format=fmt, seed=SEED, dtype=dtype))
    assert info.format == fmt.split("-")[0]
    assert info.quantization is None
    expected_config = CONFIG.with_updates(dtype=dtype)
    if fmt == "opf":  # opf configs carry no pad id; the head bias is flagged because the random bias is non-zero
        expected_config = expected_config.with_updates(pad_token_id=199999)
    assert info.config == expected_config
    loaded = load_state_dict(info)
    assert set(loaded) == set(reference)
    for name, value in loaded.items():
        assert value.dtype == np.float32, name
        expected = _expected(reference, name, fmt, dtype)
        # opf stores sinks in log2 units: / ln2 on save, x ln2 on load costs at most one float32 rounding.
        tol = 2e-7 if fmt == "opf" and name.endswith("sinks") else 0.0
        np.testing.assert_allclose(value, expected, rtol=tol, atol=0, err_msg=name)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_mlx_8bit_round_trip_is_the_mlx_quantization(tmp_path, reference, dtype):
    info = inspect_checkpoint(write_random_checkpoint(tmp_path, CONFIG, format="mlx-8bit", seed=SEED, dtype=dtype))
    assert (info.format, info.quantization.bits, info.quantization.group_size) == ("mlx", 8, 64)
    loaded = load_state_dict(info)
    assert set(loaded) == set(reference)
    quantized = {n for n, v in loaded.items() if isinstance(v, QuantizedWeight)}
    assert quantized == {n for n in reference if n.endswith(("_proj.weight", "router.weight", "gate_up_proj",
                                                             "down_proj", "embed_tokens.weight", "score.weight"))}
    for name in quantized:
        value, source = loaded[name], _expected(reference, name, "mlx", dtype)
        if name.endswith(("gate_up_proj", "down_proj")):
            source = np.swapaxes(source, -1, -2)  # experts are quantized transposed: [E, out, in]
        assert value.weight.dtype == np.uint32 and value.weight.shape == (*source.shape[:-1], source.shape[-1] // 4)
        packed, scales, biases = quant.quantize(source, bits=8, group_size=64, dtype=dtype)
        np.testing.assert_array_equal(value.weight, packed, err_msg=name)
        np.testing.assert_array_equal(value.scales, scales, err_msg=name)
        np.testing.assert_array_equal(value.biases, biases, err_msg=name)
        # 8-bit affine error is at most half a step of each group's range (plus bfloat16 rounding).
        step = (source.max() - source.min()) / 255
        assert np.abs(_dense(value, name) - _expected(reference, name, "mlx", dtype)).max() <= step, name
    for name in set(reference) - quantized:
        np.testing.assert_array_equal(loaded[name], _expected(reference, name, "mlx", dtype), err_msg=name)


@pytest.mark.parametrize("fmt", FORMATS)
def test_frameworks_return_the_same_tensors(tmp_path, fmt):
    torch = pytest.importorskip("torch")
    mx = pytest.importorskip("mlx.core")
    info = inspect_checkpoint(write_random_checkpoint(tmp_path, CONFIG, format=fmt, seed=1, dtype="bfloat16"))
    from spacy_privfilter.backends.mlx_backend import read_state_dict as read_mlx
    from spacy_privfilter.backends.torch_backend import read_state_dict as read_torch

    as_numpy = load_state_dict(info)
    as_torch = read_torch(info)
    as_mlx = read_mlx(info)

    def torch_np(t):
        return t.float().numpy() if t.is_floating_point() else t.numpy()

    def mlx_np(a):
        return np.array(a.astype(mx.float32)) if mx.issubdtype(a.dtype, mx.floating) else np.array(a)

    for name, ref in as_numpy.items():
        parts = ("weight", "scales", "biases") if isinstance(ref, QuantizedWeight) else (None,)
        for part in parts:
            r = getattr(ref, part) if part else ref
            t = getattr(as_torch[name], part) if part else as_torch[name]
            m = getattr(as_mlx[name], part) if part else as_mlx[name]
            np.testing.assert_array_equal(torch_np(t), r, err_msg=f"{name} {part}")
            np.testing.assert_array_equal(mlx_np(m), r, err_msg=f"{name} {part}")
    # bfloat16 stays bfloat16 for torch and MLX; sinks are float32 whatever the checkpoint dtype.
    assert as_torch["model.norm.weight"].dtype == (torch.float32 if fmt.startswith("mlx") else torch.bfloat16)
    assert as_torch["model.layers.0.mlp.router.bias"].dtype == torch.bfloat16
    assert as_torch["model.layers.1.self_attn.sinks"].dtype == torch.float32
    assert as_mlx["model.layers.1.self_attn.sinks"].dtype == mx.float32


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_transformers_loads_the_hf_output_with_identical_tensors(tmp_path, reference, dtype):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    path = write_random_checkpoint(tmp_path, CONFIG, format="hf", seed=SEED, dtype=dtype)
    model = transformers.OpenAIPrivacyFilterForTokenClassification.from_pretrained(path)
    assert model.dtype == getattr(torch, dtype)
    assert model.config.sliding_window == CONFIG.sliding_window
    assert [model.config.id2label[i] for i in range(CONFIG.num_labels)] == list(CONFIG.id2label)
    theirs = model.state_dict()
    from spacy_privfilter.backends.torch_backend import read_state_dict

    ours = read_state_dict(inspect_checkpoint(path))
    assert set(theirs) == set(ours)
    for name, tensor in ours.items():
        assert theirs[name].dtype == tensor.dtype, name
        assert torch.equal(theirs[name], tensor), name


def test_opf_and_mlx_sources_save_as_hf_for_transformers(tmp_path):
    """opf -> canonical -> HF: transformers sees natural-log sinks (opf log2 sinks x ln2) and a zero bias."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    reference = random_state_dict(CONFIG, seed=2)
    reference["score.bias"] = np.zeros_like(reference["score.bias"])
    opf = save_checkpoint(reference, CONFIG, tmp_path / "opf", format="opf")
    raw_sinks = read_numpy(read_header(opf / "model.safetensors"), "block.0.attn.sinks")
    np.testing.assert_allclose(raw_sinks * math.log(2), reference["model.layers.0.self_attn.sinks"], rtol=2e-7)
    hf = save_checkpoint(load_state_dict(inspect_checkpoint(opf)), CONFIG, tmp_path / "hf",
                         format="hf")
    model = transformers.OpenAIPrivacyFilterForTokenClassification.from_pretrained(hf)
    np.testing.assert_allclose(model.model.layers[0].self_attn.sinks.detach().numpy(),
                               reference["model.layers.0.self_attn.sinks"], rtol=2e-7)
    assert torch.count_nonzero(model.score.bias) == 0


def test_hf_file_layout(tmp_path):
    path = write_random_checkpoint(tmp_path, CONFIG, format="hf", dtype="bfloat16")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    header = read_header(path / "model.safetensors")
    assert header.metadata == {"format": "pt"}
    assert header.tensors["model.layers.0.self_attn.sinks"].dtype == "F32"
    assert header.tensors["model.layers.0.input_layernorm.weight"].dtype == "BF16"
    assert header.tensors["model.layers.0.mlp.experts.gate_up_proj"].shape == (8, 64, 128)
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "openai_privacy_filter" and config["dtype"] == "bfloat16"
    assert config["sliding_window"] == 4 and config["rope_parameters"]["rope_type"] == "yarn"


def test_opf_file_layout(tmp_path, reference):
    path = write_random_checkpoint(tmp_path, CONFIG, format="opf", seed=SEED)
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "privacy_filter"
    assert (config["sliding_window"], config["bidirectional_left_context"], config["bidirectional_right_context"]) \
        == (9, 4, 4)
    assert config["bidirectional_context"] is True
    header = read_header(path / "model.safetensors")
    assert header.tensors["block.1.attn.qkv.weight"].shape == (4 * 16 + 2 * 2 * 16, 64)
    qkv = read_numpy(header, "block.1.attn.qkv.weight")
    np.testing.assert_array_equal(qkv[64:96], reference["model.layers.1.self_attn.k_proj.weight"])
    # opf heads have no bias; a non-zero HF bias is kept as unembedding.bias rather than dropped.
    assert "unembedding.bias" in header.tensors
    zero_bias = dict(reference, **{"score.bias": np.zeros(CONFIG.num_labels, np.float32)})
    plain = save_checkpoint(zero_bias, CONFIG, tmp_path / "plain", format="opf")
    assert "unembedding.bias" not in read_header(plain / "model.safetensors").tensors
    loaded = load_state_dict(inspect_checkpoint(plain))
    np.testing.assert_array_equal(loaded["score.bias"], np.zeros(CONFIG.num_labels, np.float32))


def test_mlx_8bit_file_layout(tmp_path):
    path = write_random_checkpoint(tmp_path, CONFIG, format="mlx-8bit", dtype="bfloat16")
    assert {"config.json", "id2label.json", "openmed-mlx.json", "weights.safetensors"} <= {p.name for p in
                                                                                            path.iterdir()}
    header = read_header(path / "weights.safetensors")
    assert header.metadata == {"format": "mlx", "openmed_task": "token-classification"}
    t = header.tensors
    assert (t["block.0.mlp.swiglu.weight"].dtype, t["block.0.mlp.swiglu.weight"].shape) == ("U32", (8, 128, 16))
    assert t["block.0.mlp.swiglu.scales"].shape == (8, 128, 1) and t["block.0.mlp.swiglu.scales"].dtype == "BF16"
    assert t["block.0.mlp.out.weight"].shape == (8, 64, 16)
    assert t["embedding.weight"].shape == (1000, 16) and t["unembedding.weight"].shape == (9, 16)
    assert t["block.0.attn.norm.scale"].dtype == "F32" and t["block.0.attn.sinks"].dtype == "F32"
    assert t["unembedding.bias"].dtype == "BF16"
    config = json.loads((path / "config.json").read_text())
    assert config["_mlx_quantization"] == {"bits": 8, "format": "mlx-8bit", "group_size": 64}
    assert config["classifier_bias"] is True and config["model_type"] == "openai_privacy_filter"
    manifest = json.loads((path / "openmed-mlx.json").read_text())
    assert (manifest["format_version"], manifest["formats"], manifest["preferred_weights"]) == \
        (2, ["mlx-8bit"], "weights.safetensors")
    labels = json.loads((path / "id2label.json").read_text())
    assert [labels[str(i)] for i in range(9)] == list(CONFIG.id2label)


def test_mlx_artifact_loads_in_mlx_nn(tmp_path):
    """MLX's own strict loader accepts our 8-bit file for modules quantized like ``nn.quantize`` does."""
    mx = pytest.importorskip("mlx.core")
    nn = pytest.importorskip("mlx.nn")
    path = write_random_checkpoint(tmp_path, CONFIG, format="mlx-8bit", dtype="bfloat16")
    arrays = mx.load(str(path / "weights.safetensors"))
    gate = nn.QuantizedLinear(64, 8, bias=True, group_size=64, bits=8)
    gate.load_weights([(k.split("mlp.gate.", 1)[1], v) for k, v in arrays.items()
                       if k.startswith("block.0.mlp.gate.")], strict=True)
    x = mx.ones((1, 64), dtype=mx.bfloat16)
    dense = mx.dequantize(gate.weight, gate.scales, gate.biases, group_size=64, bits=8)
    np.testing.assert_allclose(np.array(gate(x).astype(mx.float32)),
                               np.array((x @ dense.T + gate.bias).astype(mx.float32)), rtol=2e-2, atol=2e-2)


def test_sharded_hf_index(tmp_path, reference):
    path = write_random_checkpoint(tmp_path / "one", CONFIG, format="hf", seed=SEED)
    header = read_header(path / "model.safetensors")
    names = sorted(header.tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    shutil.copy(path / "config.json", sharded)
    for shard, keys in shards.items():
        write_safetensors(sharded / shard, [PendingTensor(k, "F32", header.tensors[k].shape,
                                                          lambda k=k: read_numpy(header, k)) for k in keys])
    index = {"metadata": {}, "weight_map": {k: s for s, keys in shards.items() for k in keys}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    info = inspect_checkpoint(sharded)
    assert [p.name for p in info.weight_files] == sorted(shards)
    loaded = load_state_dict(info)
    for name, value in reference.items():
        np.testing.assert_array_equal(loaded[name], value, err_msg=name)
    (sharded / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model-00002-of-00002.safetensors"):
        inspect_checkpoint(sharded)


def test_viterbi_biases_from_calibration_file_or_mlx_config(tmp_path):
    hf = write_random_checkpoint(tmp_path / "hf", CONFIG, format="hf")
    assert inspect_checkpoint(hf).viterbi_biases is None
    biases = {key: i / 4 for i, key in enumerate(BIAS_KEYS)}  # the file holds all six (labels.py parses it)
    (hf / "viterbi_calibration.json").write_text(json.dumps({"operating_points": {"default": {"biases": biases}}}))
    assert inspect_checkpoint(hf).viterbi_biases == biases
    mlx = write_random_checkpoint(tmp_path / "mlx", CONFIG, format="mlx-bf16")
    config = json.loads((mlx / "config.json").read_text())
    config["_mlx_viterbi_biases"] = {"transition_bias_inside_to_end": 2}
    (mlx / "config.json").write_text(json.dumps(config))
    assert inspect_checkpoint(mlx).viterbi_biases == {"transition_bias_inside_to_end": 2.0}


def test_resaving_loaded_state_dicts(tmp_path):
    """bfloat16 round-trips through numpy; 8-bit weights are copied, not re-quantized; HF gets them dense."""
    mlx8 = write_random_checkpoint(tmp_path / "q8", CONFIG, format="mlx-8bit", seed=4, dtype="bfloat16")
    loaded = load_state_dict(inspect_checkpoint(mlx8))
    again = save_checkpoint(loaded, CONFIG, tmp_path / "again", format="mlx-8bit", dtype="bfloat16")
    first, second = read_header(mlx8 / "weights.safetensors"), read_header(again / "weights.safetensors")
    assert first.tensors.keys() == second.tensors.keys()
    for name, entry in first.tensors.items():
        assert second.tensors[name].dtype == entry.dtype, name
        np.testing.assert_array_equal(read_numpy(second, name), read_numpy(first, name), err_msg=name)
    dense = save_checkpoint(load_state_dict(inspect_checkpoint(mlx8)), CONFIG,
                            tmp_path / "dense", format="hf")
    hf = load_state_dict(inspect_checkpoint(dense))
    q8 = load_state_dict(inspect_checkpoint(mlx8))
    # numpy upcasts the bfloat16 scales, so the dense copy is float32 scale * q + bias (no bfloat16 rounding).
    assert read_header(dense / "model.safetensors").tensors["model.embed_tokens.weight"].dtype == "F32"
    for name in ("model.embed_tokens.weight", "model.layers.1.self_attn.k_proj.weight",
                 "model.layers.1.mlp.experts.down_proj"):
        np.testing.assert_array_equal(hf[name], _dense(q8[name], name), err_msg=name)


def test_partially_quantized_mlx_artifact(tmp_path, reference):
    """Modules are quantized iff ``<module>.scales`` is stored (as MLX's loader decides), e.g. a dense embedding."""
    q8 = write_random_checkpoint(tmp_path / "q8", CONFIG, format="mlx-8bit", seed=SEED)
    dense = read_header(write_random_checkpoint(tmp_path / "fp", CONFIG, format="mlx-bf16", seed=SEED)
                        / "weights.safetensors")
    header = read_header(q8 / "weights.safetensors")
    tensors = [PendingTensor(n, e.dtype, e.shape, lambda n=n: read_numpy(header, n))
               for n, e in header.tensors.items() if not n.startswith("embedding.")]
    tensors.append(PendingTensor("embedding.weight", "F32", dense.tensors["embedding.weight"].shape,
                                 lambda: read_numpy(dense, "embedding.weight")))
    write_safetensors(q8 / "weights.safetensors", tensors, header.metadata)
    loaded = load_state_dict(inspect_checkpoint(q8))
    np.testing.assert_array_equal(loaded["model.embed_tokens.weight"], reference["model.embed_tokens.weight"])
    assert isinstance(loaded["score.weight"], QuantizedWeight)
