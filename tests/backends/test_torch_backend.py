"""The torch Backend: loading checkpoints, options, errors, 8-bit weights kept 8-bit."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from spacy_privfilter.backends import load_backend  # noqa: E402
from spacy_privfilter.backends.base import ModelBackend  # noqa: E402
from spacy_privfilter.backends.torch_backend import (TorchBackend, build_model, cpu_runs_fast, load,  # noqa: E402
                                                     resolve_device)
from spacy_privfilter.backends.torch_quant import QuantizedEmbedding, QuantizedExperts, unpack_codes  # noqa: E402
from spacy_privfilter.checkpoint import QuantizedWeight, inspect_checkpoint  # noqa: E402
from spacy_privfilter.errors import CheckpointError, ConfigError  # noqa: E402
from spacy_privfilter.checkpoint.affine import dequantize as dequantize_numpy, quantize as quantize_numpy  # noqa: E402
from spacy_privfilter.testing import random_state_dict, tiny_config, write_random_checkpoint  # noqa: E402

CONFIG = tiny_config(vocab_size=300)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpt")
    return {fmt: write_random_checkpoint(root / fmt, CONFIG, format=fmt, dtype="bfloat16", seed=4)
            for fmt in ("hf", "mlx-8bit")}


def _inputs(seq: int = 21) -> tuple[np.ndarray, np.ndarray]:
    ids = np.random.default_rng(0).integers(0, 300, (2, seq))
    mask = np.ones((2, seq), dtype=bool)
    mask[1, seq - 6:] = False
    return ids, mask


def test_load_backend_returns_a_torch_backend_with_float32_numpy_logits(checkpoints: dict[str, Path]) -> None:
    backend = load_backend(checkpoints["hf"], backend="torch", device="cpu")
    assert isinstance(backend, TorchBackend) and isinstance(backend, ModelBackend)
    assert backend.name == "torch" and backend.config.id2label == CONFIG.id2label
    assert backend.model_path == checkpoints["hf"] and backend.viterbi_biases is None
    ids, mask = _inputs()
    logits = backend.logits(ids, mask)
    assert isinstance(logits, np.ndarray) and logits.dtype == np.float32 and logits.shape == (2, 21, 9)
    assert np.isfinite(logits[mask]).all()
    assert backend.logits(ids[:, :0], mask[:, :0]).shape == (2, 0, 9)


def test_fork_hook_is_registered_by_the_first_backend_not_by_the_import(checkpoints: dict[str, Path]) -> None:
    """Importing the module changes nothing process-wide; building a model installs the after-fork hook once."""
    import subprocess
    import sys

    script = (
        "import os, sys\n"
        "hooks = []\n"
        "register = os.register_at_fork\n"
        "os.register_at_fork = lambda **kw: (hooks.append(kw.get('after_in_child')), register(**kw))\n"
        "from spacy_privfilter.backends import torch_backend\n"
        "from spacy_privfilter.checkpoint import inspect_checkpoint\n"
        "ours = torch_backend._single_threaded_after_fork\n"
        "assert not torch_backend.fork_hook_registered and ours not in hooks\n"
        "info = inspect_checkpoint(sys.argv[1])\n"
        "torch_backend.load(info, device='cpu'); torch_backend.load(info, device='cpu')\n"
        "assert torch_backend.fork_hook_registered and hooks.count(ours) == 1\n")
    import os

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    done = subprocess.run([sys.executable, "-c", script, str(checkpoints["hf"])], capture_output=True, text=True,
                          env=env)
    assert done.returncode == 0, done.stderr[-2000:]


def test_dtype_auto_is_the_stored_dtype_and_can_be_overridden(checkpoints: dict[str, Path]) -> None:
    info = inspect_checkpoint(checkpoints["hf"])
    auto = load(info, device="cpu", dtype="bfloat16" if not cpu_runs_fast(torch.bfloat16) else "auto")
    assert auto.model.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16
    # precision-critical small tensors stay float32 whatever the dtype
    assert auto.model.layers[0].self_attn.sinks.dtype == torch.float32
    assert auto.model.layers[0].mlp.router.weight.dtype == torch.float32
    as_f32 = load(info, device="cpu", dtype="float32")
    assert as_f32.model.layers[0].mlp.experts.gate_up_proj.dtype == torch.float32
    ids, mask = _inputs()
    # same stored weights: bf16 compute stays close to the float32 run on this small model
    assert np.abs(auto.logits(ids, mask) - as_f32.logits(ids, mask))[mask].max() < 0.5


def test_dtype_auto_runs_half_precision_checkpoints_in_float32_on_cpus_without_fast_bf16(
        checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from spacy_privfilter.backends import torch_backend

    info = inspect_checkpoint(checkpoints["hf"])
    monkeypatch.setattr(torch_backend, "cpu_runs_fast", lambda dtype: False)
    with caplog.at_level(logging.INFO, logger="spacy_privfilter.backends.torch_backend"):
        slow_cpu = load(info, device="cpu")
    assert slow_cpu.model.layers[0].self_attn.q_proj.weight.dtype == torch.float32
    assert "no fast bfloat16 matmuls" in caplog.text and "dtype='bfloat16'" in caplog.text
    assert load(info, device="cpu", dtype="bfloat16").model.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16
    monkeypatch.setattr(torch_backend, "cpu_runs_fast", lambda dtype: True)
    assert load(info, device="cpu").model.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16


def test_viterbi_biases_come_from_the_checkpoint_info(checkpoints: dict[str, Path]) -> None:
    info = inspect_checkpoint(checkpoints["hf"])
    biases = {"transition_bias_background_stay": 0.5}
    backend = load(type(info)(**{**info.__dict__, "viterbi_biases": biases}), device="cpu")
    assert backend.viterbi_biases == biases


@pytest.mark.parametrize("option,value,needle", [
    ("device", "tpu", "device must be one of auto, cpu, cuda, mps"),
    ("dtype", "int8", "dtype must be one of auto, float32, bfloat16"),
    ("expert_precision", "float64", "expert_precision must be one of auto, float32, bfloat16"),
    ("quantized_experts", "lazy", "quantized_experts must be one of keep, dequantize"),
])
def test_bad_options_name_the_valid_choices(checkpoints: dict[str, Path], option: str, value: str,
                                            needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load(inspect_checkpoint(checkpoints["hf"]), **{option: value})


def test_runtime_options_pass_through_load_backend_and_unknown_ones_are_named(
        checkpoints: dict[str, Path]) -> None:
    dense = load_backend(checkpoints["mlx-8bit"], backend="torch", device="cpu", quantized_experts="dequantize")
    assert not isinstance(dense.model.layers[0].mlp.experts, QuantizedExperts)
    with pytest.raises(ConfigError, match="unknown torch backend option.*quantised_experts.*valid: quantized_experts"):
        load_backend(checkpoints["hf"], backend="torch", device="cpu", quantised_experts="keep")
    with pytest.raises(ConfigError, match="pack_experts apply to the torch backend only"):
        load_backend(checkpoints["hf"], backend="mlx", pack_experts=False)


def test_unavailable_accelerator_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is present here")
    with pytest.raises(ConfigError, match="'cuda' was requested but torch reports it unavailable"):
        resolve_device("cuda")
    assert resolve_device("auto").type in ("cpu", "mps")


def test_quantize_on_load_is_refused_with_the_alternative(checkpoints: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="8-bit MLX artifact"):
        load(inspect_checkpoint(checkpoints["hf"]), device="cpu", quantize=8)


def test_state_dict_problems_are_listed() -> None:
    weights = {k: torch.from_numpy(v) for k, v in random_state_dict(CONFIG).items()}
    del weights["model.layers.1.mlp.router.bias"]
    weights["model.extra.weight"] = torch.zeros(2)
    with pytest.raises(CheckpointError, match=r"1 missing: model.layers.1.mlp.router.bias; 1 unexpected: model.extra"):
        build_model(weights, CONFIG, device="cpu")
    weights = {k: torch.from_numpy(v) for k, v in random_state_dict(CONFIG).items()}
    weights["model.norm.weight"] = torch.ones(63)
    with pytest.raises(CheckpointError, match=r"1 mis-shaped: model.norm.weight \[63\] \(expected \[64\]\)"):
        build_model(weights, CONFIG, device="cpu")


def test_quantized_tensors_are_checked_by_their_dense_shape(checkpoints: dict[str, Path]) -> None:
    """8-bit experts are stored [E, out, in] and packed 4 codes a word; the checker compares the [E, in, out] they
    stand for, so a wrong expert count is reported like any dense mismatch."""
    from dataclasses import replace

    from spacy_privfilter.backends.torch_backend import read_state_dict

    weights = read_state_dict(inspect_checkpoint(checkpoints["mlx-8bit"]))
    build_model(weights, CONFIG, device="cpu")  # the unchanged artifact passes
    down = weights["model.layers.0.mlp.experts.down_proj"]
    weights["model.layers.0.mlp.experts.down_proj"] = replace(down, weight=down.weight[:-1], scales=down.scales[:-1],
                                                              biases=down.biases[:-1])
    e, i, d = CONFIG.num_local_experts, CONFIG.intermediate_size, CONFIG.hidden_size
    with pytest.raises(CheckpointError, match=rf"1 mis-shaped: model.layers.0.mlp.experts.down_proj "
                                              rf"\[{e - 1}, {i}, {d}\] \(expected \[{e}, {i}, {d}\]\)"):
        build_model(weights, CONFIG, device="cpu")


def test_unpack_codes_follows_the_mlx_word_layout() -> None:
    codes = np.random.default_rng(1).integers(0, 256, (3, 128)).astype(np.uint32)
    words = codes[:, 0::4] | codes[:, 1::4] << 8 | codes[:, 2::4] << 16 | codes[:, 3::4] << 24
    assert np.array_equal(unpack_codes(words, 8).numpy(), codes)
    nibbles = codes % 16
    words4 = sum(nibbles[:, j::8] << (4 * j) for j in range(8)).astype(np.uint32)
    assert np.array_equal(unpack_codes(words4, 4).numpy(), nibbles)


def test_8bit_weights_stay_8bit_and_keep_equals_dequantize_at_load(checkpoints: dict[str, Path]) -> None:
    info = inspect_checkpoint(checkpoints["mlx-8bit"])
    kept = load(info, device="cpu", expert_kernel="torch")
    experts = kept.model.layers[0].mlp.experts
    assert isinstance(experts, QuantizedExperts) and experts.gate_up_proj.codes.dtype == torch.uint8
    assert isinstance(kept.model.embed_tokens, QuantizedEmbedding)
    dense = load(info, device="cpu", quantized_experts="dequantize", expert_kernel="torch")
    assert not isinstance(dense.model.layers[0].mlp.experts, QuantizedExperts)
    ids, mask = _inputs()
    assert np.abs(kept.logits(ids, mask) - dense.logits(ids, mask))[mask].max() < 1e-5


def test_8bit_embedding_rows_are_read_from_the_file_and_equal_the_mapped_table(checkpoints: dict[str, Path],
                                                                               tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "q8"
    shutil.copytree(checkpoints["mlx-8bit"], folder)
    embed = load(inspect_checkpoint(folder), device="cpu", expert_kernel="torch").model.embed_tokens
    assert embed.source is not None and embed.source.path.name == "weights.safetensors"
    assert embed.weight.codes is None  # only the scales and biases are kept (copies), no view of the mapped file
    # The reference: the table copied into memory (what loading with dequantized experts does).
    owned = load(inspect_checkpoint(folder), device="cpu", quantized_experts="dequantize",
                 expert_kernel="torch").model.embed_tokens
    assert owned.source is None and owned.weight.codes is not None
    ids = torch.tensor([[5, 0, 299, 5], [17, 17, 3, 298]])
    from_file = embed(ids)
    assert from_file.shape == (2, 4, CONFIG.hidden_size) and torch.equal(from_file, owned(ids))
    assert embed(ids[:, :0]).shape == (2, 0, CONFIG.hidden_size)
    with pytest.raises(IndexError, match=r"token ids must be in \[0, 300\)"):
        embed(torch.tensor([[1, 300]]))
    weights = folder / "weights.safetensors"
    weights.write_bytes(weights.read_bytes() + b"\0")  # a re-download or edit after loading
    with pytest.raises(CheckpointError, match="changed on disk after the model was loaded"):
        embed(ids)


def test_dequantized_8bit_weights_are_close_to_the_originals() -> None:
    weight = np.random.default_rng(3).standard_normal((2, 48, 128)).astype(np.float32)
    packed, scales, biases = quantize_numpy(weight, bits=8, group_size=64)
    from spacy_privfilter.backends.torch_quant import dequantize

    restored = dequantize(QuantizedWeight(packed, scales, biases, bits=8, group_size=64), dtype=torch.float32)
    # the MLX-exact numpy dequantizer is an independent implementation of the same formula
    assert np.abs(restored.numpy() - dequantize_numpy(packed, scales, biases, bits=8, group_size=64)).max() < 1e-6
    step = (np.ptp(weight.reshape(2, 48, 2, 64), axis=-1) / 255).max()
    assert np.abs(restored.numpy() - weight).max() <= step  # MLX snaps one group edge exactly, so up to a step


def test_an_all_padding_row_is_finite_and_leaves_other_rows_alone(checkpoints: dict[str, Path]) -> None:
    backend = load(inspect_checkpoint(checkpoints["hf"]), device="cpu")
    ids, mask = _inputs()
    alone = backend.logits(ids[:1], mask[:1])
    mask = np.concatenate([mask[:1], np.zeros_like(mask[:1])])
    together = backend.logits(np.concatenate([ids[:1], ids[:1]]), mask)
    assert np.isfinite(together).all()
    assert np.abs(together[0] - alone[0]).max() < 1e-5
