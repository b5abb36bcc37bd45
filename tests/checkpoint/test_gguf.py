"""GGUF checkpoints of the ggml port: written with the ``gguf`` writer from our random checkpoints, read back into
canonical tensors; F32 gives the safetensors checkpoint's logits, Q8_0 experts stay 8-bit and keep the argmax."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("gguf")
torch = pytest.importorskip("torch")

from spacy_privfilter.backends import load_backend  # noqa: E402
from spacy_privfilter.checkpoint import affine  # noqa: E402
from spacy_privfilter.checkpoint import QuantizedWeight, inspect_checkpoint, load_state_dict  # noqa: E402
from spacy_privfilter.checkpoint.gguf import dequantize_q8_0, q8_0_blocks  # noqa: E402
from spacy_privfilter.checkpoint.gguf_writer import write_gguf  # noqa: E402
from spacy_privfilter.errors import CheckpointError, ModelNotFoundError  # noqa: E402
from spacy_privfilter.testing import (bioes_labels, margin_state_dict, random_inputs, random_state_dict,  # noqa: E402
                                      tiny_config, write_random_checkpoint)

CONFIG = tiny_config(vocab_size=512)
SEED = 3


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf")
    weights = random_state_dict(CONFIG, seed=SEED)
    write_random_checkpoint(root / "hf", CONFIG, format="hf", seed=SEED)
    write_gguf(weights, CONFIG, root / "f32.gguf", dtype="float32")
    write_gguf(weights, CONFIG, root / "f16.gguf", dtype="float16")
    margin = margin_state_dict(CONFIG, seed=SEED)
    write_gguf(margin, CONFIG, root / "margin-f32.gguf", dtype="float32")
    write_gguf(margin, CONFIG, root / "margin-q8.gguf", dtype="float16", experts="Q8_0")
    return root, weights


def _logits(model, *, seq: int = 48, **options) -> np.ndarray:
    backend = load_backend(model, backend="torch", device="cpu", **options)
    ids, mask = random_inputs(CONFIG.vocab_size, 3, seq, seed=11, pad_last=5)
    return backend.logits(ids, mask)


def test_f32_gguf_gives_the_safetensors_logits(files):
    root, _ = files
    np.testing.assert_allclose(_logits(root / "f32.gguf"), _logits(root / "hf"), rtol=0, atol=1e-6)


def test_f32_gguf_tensors_are_the_canonical_ones(files):
    root, weights = files
    info = inspect_checkpoint(root / "f32.gguf")
    assert (info.format, info.config, info.quantization) == ("gguf", CONFIG.with_updates(classifier_bias=True), None)
    loaded = load_state_dict(info)
    assert set(loaded) == set(weights)
    for name, value in weights.items():  # a wrong expert transpose is shape-valid here too: values catch it
        np.testing.assert_array_equal(loaded[name], value, err_msg=name)


def test_f16_gguf_keeps_the_ports_precision_per_tensor(files):
    root, weights = files
    from spacy_privfilter.backends.torch_backend import read_state_dict

    loaded = read_state_dict(inspect_checkpoint(root / "f16.gguf"))
    for name, value in weights.items():
        half = name.endswith(("proj.weight", "gate_up_proj", "down_proj")) or name in (
            "model.embed_tokens.weight", "score.weight")
        assert loaded[name].dtype == (torch.float16 if half else torch.float32), name
        expected = value.astype(np.float16).astype(np.float32) if half else value
        np.testing.assert_array_equal(loaded[name].float().numpy(), expected, err_msg=name)


def test_bf16_gguf_tensors_are_the_bfloat16_rounded_ones(files, tmp_path):
    _, weights = files
    write_gguf(weights, CONFIG, tmp_path / "bf16.gguf", dtype="bfloat16")
    info = inspect_checkpoint(tmp_path / "bf16.gguf")
    assert info.config.dtype == "bfloat16"
    loaded = load_state_dict(info)
    for name in ("model.embed_tokens.weight", "model.layers.1.mlp.experts.gate_up_proj", "score.weight"):
        np.testing.assert_array_equal(loaded[name], affine.round_to_bfloat16(weights[name]), err_msg=name)
    np.testing.assert_array_equal(loaded["model.norm.weight"], weights["model.norm.weight"])  # F32 in the file


def test_q8_0_experts_stay_8_bit_and_keep_the_argmax(files):
    root, _ = files
    info = inspect_checkpoint(root / "margin-q8.gguf")
    assert (info.quantization.bits, info.quantization.group_size) == (8, 32)
    backend = load_backend(root / "margin-q8.gguf", backend="torch", device="cpu", dtype="float32")
    assert type(backend.model.layers[0].mlp.experts).__name__ == "QuantizedExperts"
    reference = _logits(root / "margin-f32.gguf", seq=256)
    kept = _logits(root / "margin-q8.gguf", seq=256, dtype="float32")
    mask = random_inputs(CONFIG.vocab_size, 3, 256, seed=11, pad_last=5)[1]
    agreement = float((reference.argmax(-1) == kept.argmax(-1))[mask].mean())
    assert agreement >= 0.99, agreement
    dequantized = _logits(root / "margin-q8.gguf", seq=256, dtype="float32", quantized_experts="dequantize")
    np.testing.assert_allclose(dequantized, kept, atol=1e-4)


def test_q8_0_block_decoding_matches_the_format_by_hand():
    # Two blocks of 32 built byte by byte: fp16 scale d, then 32 int8 codes; value = d * q.
    codes = np.arange(-32, 32, dtype=np.int8).reshape(2, 32) * 4
    scales = np.array([0.5, -0.0625], dtype=np.float16)
    raw = np.concatenate([np.concatenate([scales[i:i + 1].view(np.uint8), codes[i].view(np.uint8)])
                          for i in range(2)]).reshape(1, 68)
    expected = (codes.astype(np.float32) * scales.astype(np.float32)[:, None]).reshape(1, 64)
    np.testing.assert_array_equal(dequantize_q8_0(raw, (1, 64)), expected)
    got_codes, got_scales = q8_0_blocks(raw, (1, 64))
    np.testing.assert_array_equal(got_codes.reshape(2, 32), codes)
    np.testing.assert_array_equal(got_scales.reshape(2), scales)


def test_kept_q8_0_experts_dequantize_exactly_to_the_blocks(files):
    root, _ = files
    gguf = pytest.importorskip("gguf")
    loaded = load_state_dict(inspect_checkpoint(root / "margin-q8.gguf"))
    down = loaded["model.layers.1.mlp.experts.down_proj"]
    assert isinstance(down, QuantizedWeight) and down.group_size == 32
    dense = affine.dequantize(down.weight, down.scales, down.biases, bits=8, group_size=32)  # [E, out, in]
    tensor = next(t for t in gguf.GGUFReader(root / "margin-q8.gguf").tensors if t.name == "blk.1.ffn_down_exps.weight")
    by_gguf = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    np.testing.assert_array_equal(dense, by_gguf)


def test_labels_come_from_the_file(tmp_path):
    config = tiny_config(vocab_size=512, id2label=bioes_labels(("iban", "kennzeichen", "steuer_id")))
    write_gguf(random_state_dict(config), config, tmp_path / "de.gguf")
    info = inspect_checkpoint(tmp_path)  # a folder holding one GGUF file
    assert info.config.id2label == config.id2label and info.config.num_labels == 13
    assert _logits(tmp_path / "de.gguf").shape[-1] == 13


def test_mlx_runs_gguf_like_torch(files):
    pytest.importorskip("mlx.core")
    root, _ = files
    ids, mask = random_inputs(CONFIG.vocab_size, 2, 40, seed=5)
    mlx_f32 = load_backend(root / "f32.gguf", backend="mlx").logits(ids, mask)
    torch_f32 = load_backend(root / "f32.gguf", backend="torch", device="cpu").logits(ids, mask)
    np.testing.assert_allclose(mlx_f32, torch_f32, atol=1e-4)
    mlx_q8 = load_backend(root / "margin-q8.gguf", backend="mlx", dtype="float32").logits(ids, mask)
    torch_q8 = load_backend(root / "margin-q8.gguf", backend="torch", device="cpu", dtype="float32").logits(ids, mask)
    np.testing.assert_allclose(mlx_q8, torch_q8, atol=1e-3)


# -- errors ------------------------------------------------------------------------------------------------------
def test_a_folder_with_two_gguf_files_asks_which(files, tmp_path):
    root, _ = files
    for name in ("f32.gguf", "f16.gguf"):
        shutil.copy(root / name, tmp_path / name)
    with pytest.raises(CheckpointError, match="2 GGUF files.*f16.gguf, f32.gguf"):
        inspect_checkpoint(tmp_path)


def test_truncated_or_foreign_gguf_files_fail_clearly(files, tmp_path):
    root, _ = files
    data = (root / "f32.gguf").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="'cut.gguf' is not a readable GGUF file"):
        inspect_checkpoint(tmp_path / "cut.gguf")
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(CheckpointError, match="'junk.gguf' is not a readable GGUF file"):
        inspect_checkpoint(tmp_path / "junk.gguf")
    with pytest.raises(ModelNotFoundError):
        inspect_checkpoint(tmp_path / "absent.gguf")


def test_wrong_architecture_missing_tensors_and_unsupported_types_are_listed(tmp_path):
    gguf = pytest.importorskip("gguf")
    writer = gguf.GGUFWriter(str(tmp_path / "llama.gguf"), "llama")
    writer.add_array("llama.classifier.output_labels", ["O"])
    writer.write_header_to_file(); writer.write_kv_data_to_file(); writer.write_tensors_to_file(); writer.close()
    with pytest.raises(CheckpointError, match="architecture 'llama'; expected 'openai-privacy-filter'"):
        inspect_checkpoint(tmp_path / "llama.gguf")

    weights = random_state_dict(CONFIG)
    write_gguf(weights, CONFIG, tmp_path / "ok.gguf")
    reader = gguf.GGUFReader(tmp_path / "ok.gguf")
    out = gguf.GGUFWriter(str(tmp_path / "bad.gguf"), "openai-privacy-filter")
    for field in reader.fields.values():
        if field.name.startswith("openai-privacy-filter.") or field.name.startswith("tokenizer."):
            value = field.contents()
            if isinstance(value, list):
                out.add_array(field.name, value)
            elif isinstance(value, str):
                out.add_string(field.name, value)
            elif isinstance(value, bool):
                out.add_bool(field.name, value)
            elif isinstance(value, float):
                out.add_float32(field.name, value)
            else:
                out.add_uint32(field.name, value)
    for t in reader.tensors:
        if t.name == "blk.0.attn_q.weight":
            continue  # missing
        array = np.array(gguf.quants.dequantize(t.data, t.tensor_type)).reshape(tuple(reversed(t.shape.tolist())))
        if t.name == "blk.1.attn_k.weight":  # an unsupported quantization
            out.add_tensor(t.name, gguf.quants.quantize(array, gguf.GGMLQuantizationType.Q4_0),
                           raw_dtype=gguf.GGMLQuantizationType.Q4_0)
        else:
            out.add_tensor(t.name, np.ascontiguousarray(array))
    out.add_tensor("blk.0.extra.weight", np.zeros(4, dtype=np.float32))
    out.write_header_to_file(); out.write_kv_data_to_file(); out.write_tensors_to_file(); out.close()
    with pytest.raises(CheckpointError) as err:
        inspect_checkpoint(tmp_path / "bad.gguf")
    message = str(err.value)
    assert "1 missing: blk.0.attn_q.weight" in message and "1 unexpected: blk.0.extra.weight" in message
    assert "blk.1.attn_k.weight Q4_0 (expected F32 or F16 or BF16 or Q8_0)" in message


def test_detector_takes_a_gguf_file(tmp_path):
    from spacy_privfilter.detector import Detector

    config = tiny_config()  # the real vocabulary: text is tokenized with o200k_base
    write_gguf(random_state_dict(config, seed=4), config, tmp_path / "model.gguf", dtype="float32")
    write_random_checkpoint(tmp_path / "hf", config, format="hf", seed=4)
    text = "Write to jane.doe@example.org or call Jane Doe."
    from_gguf = Detector.from_pretrained(tmp_path / "model.gguf", backend="torch", device="cpu", dtype="float32")
    from_hf = Detector.from_pretrained(tmp_path / "hf", backend="torch", device="cpu", dtype="float32")
    assert from_gguf.scheme.classes == from_hf.scheme.classes
    ids, mask = random_inputs(config.vocab_size, 1, 24, seed=2)
    np.testing.assert_allclose(from_gguf.backend.logits(ids, mask), from_hf.backend.logits(ids, mask), atol=1e-6)
    assert [(s.label, s.start, s.end) for s in from_gguf.detect(text)] == \
        [(s.label, s.start, s.end) for s in from_hf.detect(text)]
