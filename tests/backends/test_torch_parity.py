"""Parity of the torch runtime with transformers 5.23 and across checkpoint formats.

Tolerances: float32 logits within 1e-4 (max |delta|) with identical argmax; bfloat16 and 8-bit runs are judged
by argmax agreement on a model with trained-like margins (see ``margin_state_dict``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from spacy_privfilter.checkpoint.config_json import config_dict  # noqa: E402
from spacy_privfilter.backends.torch_backend import TorchBackend, load  # noqa: E402
from spacy_privfilter.checkpoint import inspect_checkpoint, save_checkpoint  # noqa: E402
from spacy_privfilter.config import ModelConfig  # noqa: E402
from spacy_privfilter.testing import (full_config, margin_state_dict, random_inputs, random_state_dict,  # noqa: E402
                                      tiny_config)  # noqa: E402


def hf_model(config: ModelConfig, weights: dict, dtype: torch.dtype = torch.float32, experts: str = "eager"):
    """transformers' OpenAIPrivacyFilterForTokenClassification holding ``weights`` (sinks stay float32)."""
    hf_dict = {k: v for k, v in config_dict(config, "hf").items() if k not in ("architectures", "model_type")}
    hf_dict["pad_token_id"] = hf_dict["eos_token_id"] = 0  # tiny vocabularies do not hold id 199999
    hf_config = transformers.OpenAIPrivacyFilterConfig(**hf_dict)
    with torch.device("meta"):  # no random init, and the model shares the caller's float32 arrays
        model = transformers.OpenAIPrivacyFilterForTokenClassification(hf_config)
    model.load_state_dict({k: torch.as_tensor(v) for k, v in weights.items()}, assign=True)
    model.model.rotary_emb = type(model.model.rotary_emb)(hf_config)  # its buffers are not in the state dict
    model = model.to(dtype).eval()
    for layer in model.model.layers:
        layer.self_attn.sinks.data = layer.self_attn.sinks.data.float()
    if experts != "eager":
        model.set_experts_implementation(experts)
    return model


def hf_logits(model, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model(input_ids=torch.as_tensor(input_ids), attention_mask=torch.as_tensor(attention_mask).long())
    return out.logits.float().numpy()


def _ours(config: ModelConfig, weights: dict, dtype: str = "float32", **options) -> TorchBackend:
    tensors = {k: v if isinstance(v, torch.Tensor) else torch.from_numpy(np.asarray(v)) for k, v in weights.items()}
    return TorchBackend.from_state_dict(tensors, config, device="cpu", dtype=dtype, **options)


@pytest.mark.parametrize("heads,kv_heads,top_k,window,seq,batch,pad", [
    (4, 4, 1, 4, 23, 1, 0),    # GQA group 1, top-1
    (4, 2, 2, 5, 37, 2, 11),   # group 2, top-2, right padding
    (7, 1, 3, 3, 41, 3, 9),    # group 7, top-3
    (14, 2, 4, 8, 53, 2, 20),  # the real head layout, top-4
])
def test_float32_logits_match_transformers(heads: int, kv_heads: int, top_k: int, window: int, seq: int,
                                          batch: int, pad: int) -> None:
    config = tiny_config(vocab_size=400, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         num_experts_per_tok=top_k, sliding_window=window, intermediate_size=48)
    weights = random_state_dict(config, seed=heads + top_k)
    ids, mask = random_inputs(400, batch, seq, seed=seq, pad_last=pad)
    want = hf_logits(hf_model(config, weights), ids, mask)
    got = _ours(config, weights, block_size=8).logits(ids, mask)
    assert np.abs(got - want)[mask].max() <= 1e-4
    assert (got.argmax(-1) == want.argmax(-1))[mask].all()


@pytest.mark.slow
def test_full_architecture_shape_matches_transformers() -> None:
    config = full_config(vocab_size=2048, dtype="float32")  # every dimension real except the vocabulary
    weights = random_state_dict(config, seed=5)
    for name in [k for k in weights if k.endswith(("gate_up_proj", "down_proj"))]:
        # the runtime's [E, out, in] memory layout up front, so the two models share one copy (~5 GB float32)
        weights[name] = torch.from_numpy(weights.pop(name)).transpose(1, 2).contiguous().transpose(1, 2)
    ids, mask = random_inputs(2048, 2, 300, seed=3, pad_last=40)
    want = hf_logits(hf_model(config, weights), ids, mask)
    got = _ours(config, weights).logits(ids, mask)
    assert np.abs(got - want)[mask].max() <= 1e-4
    assert (got.argmax(-1) == want.argmax(-1))[mask].all()


def _agreement(logits: np.ndarray, reference: np.ndarray) -> float:
    return float((logits.argmax(-1) == reference.argmax(-1)).mean())


def test_bfloat16_argmax_agrees_with_float32_at_least_as_often_as_transformers() -> None:
    config = tiny_config(vocab_size=2000, hidden_size=128, intermediate_size=128, num_local_experts=16,
                         num_hidden_layers=4, sliding_window=16)
    weights = margin_state_dict(config)
    ids, mask = random_inputs(2000, 1, 2000, seed=11)
    reference = _ours(config, weights).logits(ids, mask)
    ours = _agreement(_ours(config, weights, dtype="bfloat16").logits(ids, mask), reference)
    eager = _agreement(hf_logits(hf_model(config, weights, torch.bfloat16), ids, mask), reference)
    grouped = _agreement(hf_logits(hf_model(config, weights, torch.bfloat16, "grouped_mm"), ids, mask), reference)
    print(f"bf16 argmax agreement with float32: this runtime {ours:.4f}, transformers eager {eager:.4f}, "
          f"transformers grouped_mm {grouped:.4f}")
    assert ours >= 0.995
    assert ours >= eager


def _write(weights: dict, config: ModelConfig, folder: Path, fmt: str, dtype: str) -> Path:
    return save_checkpoint(weights, config, folder / fmt, format=fmt, dtype=dtype)


def test_hf_opf_and_mlx_copies_of_the_same_weights_give_the_same_logits(tmp_path: Path) -> None:
    config = tiny_config(vocab_size=500, classifier_bias=True)
    weights = random_state_dict(config, seed=8)
    ids, mask = random_inputs(500, 2, 31, seed=4, pad_last=6)
    # float32 storage: every format then holds bit-identical values (MLX keeps norms float32, HF would round them)
    results = {fmt: load(inspect_checkpoint(_write(weights, config, tmp_path, fmt, "float32")), device="cpu",
                         dtype="float32").logits(ids, mask)
               for fmt in ("hf", "opf", "mlx-bf16")}
    want = hf_logits(hf_model(config, weights), ids, mask)
    for fmt, got in results.items():
        assert np.abs(got - want)[mask].max() <= 1e-4, fmt


def test_8bit_artifact_agrees_with_bf16_on_argmax(tmp_path: Path) -> None:
    config = tiny_config(vocab_size=2000, hidden_size=128, intermediate_size=128, num_local_experts=16,
                         num_hidden_layers=4, sliding_window=16)
    weights = margin_state_dict(config, seed=2)
    ids, mask = random_inputs(2000, 1, 1500, seed=12)
    bf16 = load(inspect_checkpoint(_write(weights, config, tmp_path, "mlx-bf16", "bfloat16")), device="cpu")
    q8 = load(inspect_checkpoint(_write(weights, config, tmp_path, "mlx-8bit", "bfloat16")), device="cpu")
    agreement = _agreement(q8.logits(ids, mask), bf16.logits(ids, mask))
    print(f"8-bit vs bf16 argmax agreement: {agreement:.4f}")
    assert agreement >= 0.99
