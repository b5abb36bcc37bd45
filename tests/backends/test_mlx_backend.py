"""Loading checkpoints into the MLX backend: formats, dtypes, 8-bit (declared or on load), strictness, errors.

Tolerances: copies of the same float32 weights in different formats give logits within 1e-5; 8-bit runs are
judged by argmax agreement with bfloat16 (>= 99%) on a model with trained-like margins.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core", reason="mlx is not installed (pip install 'mlx[cpu]' on Linux)")
pytestmark = pytest.mark.mlx
nn = pytest.importorskip("mlx.nn")

from spacy_privfilter.backends import load_backend  # noqa: E402
from spacy_privfilter.backends.base import ModelBackend  # noqa: E402
from spacy_privfilter.backends.mlx_backend import MlxBackend, build_model, load  # noqa: E402
from spacy_privfilter.backends.mlx_model import QuantizedExpertLinear  # noqa: E402
from spacy_privfilter.checkpoint import inspect_checkpoint, save_checkpoint  # noqa: E402
from spacy_privfilter.errors import CheckpointError, ConfigError  # noqa: E402
from spacy_privfilter.testing import random_state_dict, tiny_config, write_random_checkpoint  # noqa: E402

from spacy_privfilter.testing import margin_state_dict, random_inputs  # noqa: E402

VOCAB = 500


def _load(folder: Path, **options) -> MlxBackend:
    return load(inspect_checkpoint(folder), device="cpu", **options)


def test_hf_opf_and_mlx_copies_of_the_same_weights_give_the_same_logits(tmp_path: Path) -> None:
    config = tiny_config(vocab_size=VOCAB, classifier_bias=True)
    weights = random_state_dict(config, seed=8)
    ids, mask = random_inputs(VOCAB, 2, 31, seed=4, pad_last=6)
    results = {fmt: _load(save_checkpoint(weights, config, tmp_path / fmt, format=fmt, dtype="float32"))
               .logits(ids, mask) for fmt in ("hf", "opf", "mlx-bf16")}
    assert all(r.dtype == np.float32 and r.shape == (2, 31, config.num_labels) for r in results.values())
    for fmt in ("opf", "mlx-bf16"):
        assert np.abs(results[fmt] - results["hf"])[mask].max() <= 1e-5, fmt


def test_load_backend_runs_mlx_on_linux_when_asked(tmp_path: Path) -> None:
    config = tiny_config(vocab_size=VOCAB)
    folder = write_random_checkpoint(tmp_path / "hf", config, format="hf", seed=1)
    backend = load_backend(folder, backend="mlx", device="cpu", dtype="float32")
    assert isinstance(backend, MlxBackend) and isinstance(backend, ModelBackend) and backend.name == "mlx"
    assert backend.model_path == folder and backend.viterbi_biases is None
    ids, mask = random_inputs(VOCAB, 1, 9, seed=0)
    assert np.isfinite(backend.logits(ids, mask)).all()


def test_dtypes_are_kept_as_stored_unless_asked(tmp_path: Path) -> None:
    config = tiny_config(vocab_size=VOCAB)
    folder = write_random_checkpoint(tmp_path / "hf", config, format="hf", seed=2, dtype="bfloat16")
    stored = _load(folder).model
    assert stored.embed_tokens.weight.dtype == mx.bfloat16
    assert stored.layers[0].mlp.experts.gate_up_proj.weight.dtype == mx.bfloat16
    assert stored.layers[0].self_attn.sinks.dtype == mx.float32  # sinks are float32 on disk and in memory
    upcast = _load(folder, dtype="float32").model
    assert upcast.layers[1].self_attn.q_proj.weight.dtype == mx.float32


def _quantized_paths(model) -> set[str]:
    return {name for name, module in model.named_modules()
            if isinstance(module, (nn.QuantizedLinear, nn.QuantizedEmbedding, QuantizedExpertLinear))}


def test_8bit_artifact_quantizes_exactly_the_modules_with_scales(tmp_path: Path) -> None:
    config = tiny_config(vocab_size=VOCAB)
    folder = write_random_checkpoint(tmp_path / "q8", config, format="mlx-8bit", seed=3, dtype="bfloat16")
    every = _quantized_paths(_load(folder).model)
    assert len(every) == 2 + config.num_hidden_layers * 7  # embedding, head; q, k, v, o, router, 2 experts
    # Store the head and layer 1's expert down-projection dense: only those two must come back unquantized.
    tensors = mx.load(str(folder / "weights.safetensors"))
    head = mx.dequantize(*(tensors.pop(f"unembedding.{leaf}") for leaf in ("weight", "scales", "biases")),
                         group_size=64, bits=8)
    experts = mx.dequantize(*(tensors.pop(f"block.1.mlp.out.{leaf}")
                              for leaf in ("weight", "scales", "biases")), group_size=64, bits=8)
    tensors["unembedding.weight"] = head
    tensors["block.1.mlp.out.weight"] = mx.swapaxes(experts, -1, -2)  # dense experts are [E, in, out]
    mx.save_safetensors(str(folder / "weights.safetensors"), tensors, metadata={"format": "mlx"})
    partial = _load(folder).model
    assert every - _quantized_paths(partial) == {"score", "layers.1.mlp.experts.down_proj"}
    assert isinstance(partial.score, nn.Linear)


def test_quantize_on_load_matches_the_artifact_layout_and_keeps_argmax(tmp_path: Path) -> None:
    config = tiny_config(vocab_size=2000, hidden_size=128, intermediate_size=128, num_local_experts=16,
                         num_hidden_layers=3, sliding_window=16)
    weights = margin_state_dict(config, seed=5)
    folder = save_checkpoint(weights, config, tmp_path / "hf", format="hf", dtype="bfloat16")
    ids, mask = random_inputs(2000, 1, 1200, seed=6)
    bf16 = _load(folder)
    q8 = _load(folder, quantize=8)
    assert q8.quantization is not None and q8.quantization.bits == 8 and q8.quantization.group_size == 64
    assert len(_quantized_paths(q8.model)) == 2 + config.num_hidden_layers * 7
    agreement = float((q8.logits(ids, mask).argmax(-1) == bf16.logits(ids, mask).argmax(-1)).mean())
    print(f"MLX 8-bit (quantized on load) vs bf16 argmax agreement: {agreement:.4f}")
    assert agreement >= 0.99


def test_strict_loading_lists_missing_unexpected_and_misshaped_keys() -> None:
    config = tiny_config(vocab_size=VOCAB)
    weights = {k: mx.array(v) for k, v in random_state_dict(config, seed=0).items()}
    del weights["model.layers.1.self_attn.sinks"]
    weights["model.layers.0.mlp.extra.weight"] = mx.zeros((2,))
    weights["score.weight"] = mx.zeros((config.num_labels + 1, config.hidden_size))
    with pytest.raises(CheckpointError) as error:
        build_model(weights, config)
    message = str(error.value)
    assert "1 missing: model.layers.1.self_attn.sinks" in message
    assert "1 unexpected: model.layers.0.mlp.extra.weight" in message
    assert f"score.weight [{config.num_labels + 1}, 64] (expected [{config.num_labels}, 64])" in message


def test_a_truncated_weights_file_fails_at_load_with_a_checkpoint_error(tmp_path: Path) -> None:
    config = tiny_config(vocab_size=VOCAB)
    folder = write_random_checkpoint(tmp_path / "q8", config, format="mlx-8bit", seed=3)
    weights = folder / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CheckpointError):
        _load(folder)


def test_options_and_inputs_are_checked(tmp_path: Path) -> None:
    config = tiny_config(vocab_size=VOCAB)
    hf = write_random_checkpoint(tmp_path / "hf", config, format="hf", seed=1)
    info = inspect_checkpoint(hf)
    with pytest.raises(ConfigError, match="dtype must be one of"):
        load(info, dtype="float64")
    with pytest.raises(ConfigError, match="quantize must be None or one of"):
        load(info, quantize=3)
    with pytest.raises(ConfigError, match="device for the MLX backend"):
        load(info, device="cuda")
    q8 = write_random_checkpoint(tmp_path / "q8", config, format="mlx-8bit", seed=1)
    with pytest.raises(ConfigError, match="already quantized to 8 bits"):
        load(inspect_checkpoint(q8), quantize=4)
    backend = load(info, device="cpu")
    with pytest.raises(ConfigError, match=r"token ids must lie in \[0, 500\)"):
        backend.logits(np.array([[1, 500]]), np.ones((1, 2), dtype=bool))
    with pytest.raises(ConfigError, match="must both be"):
        backend.logits(np.array([1, 2]), np.ones(2, dtype=bool))
    assert backend.logits(np.zeros((2, 0), dtype=np.int64), np.zeros((2, 0), dtype=bool)).shape == (2, 0, 9)


def test_mlx_artifact_config_is_read_from_the_file(tmp_path: Path) -> None:
    config = tiny_config(vocab_size=VOCAB, sliding_window=6)
    folder = write_random_checkpoint(tmp_path / "bf16", config, format="mlx-bf16", seed=1, dtype="bfloat16")
    declared = json.loads((folder / "config.json").read_text())
    model = _load(folder).model
    assert model.layers[0].self_attn.window == declared["sliding_window"] == 6
    assert model.score.weight.shape == (len(declared["id2label"]), config.hidden_size)


@pytest.mark.parametrize("fmt,dtype", [("hf", "float32"), ("mlx-8bit", "bfloat16")])
def test_gather_kernels_and_the_cpu_expert_loop_agree(tmp_path: Path, fmt: str, dtype: str) -> None:
    """The CPU runs experts as per-expert float32 matmuls; Apple GPUs use gather_mm / gather_qmm (as OpenMed)."""
    config = tiny_config(vocab_size=VOCAB, hidden_size=128, intermediate_size=128, num_local_experts=16)
    folder = write_random_checkpoint(tmp_path / fmt, config, format=fmt, seed=6, dtype=dtype)
    backend = _load(folder, dtype="float32")  # gather_mm on the CPU accepts float32 only
    ids, mask = random_inputs(VOCAB, 2, 40, seed=3, pad_last=9)
    results = {}
    for looped in (True, False):
        for layer in backend.model.layers:
            layer.mlp.experts.looped = looped
        results[looped] = backend.logits(ids, mask)
    looped, gathered = results[True], results[False]
    assert np.abs(looped - gathered)[mask].max() <= 1e-4
