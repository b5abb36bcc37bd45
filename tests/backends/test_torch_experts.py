"""The torch expert fast paths: rows padded per expert, oneDNN-packed bfloat16 matrices on the CPU (the native
kernel has its own tests in test_native_kernel.py)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from spacy_privfilter.backends.torch_backend import build_model  # noqa: E402
from spacy_privfilter.backends.torch_model import MoE, _pad_groups  # noqa: E402
from spacy_privfilter.backends.torch_packed import PackedExperts, packing_available  # noqa: E402
from spacy_privfilter.errors import ConfigError  # noqa: E402
from spacy_privfilter.testing import random_inputs, random_state_dict, tiny_config  # noqa: E402

CONFIG = tiny_config(vocab_size=300)
needs_packing = pytest.mark.skipif(not packing_available(), reason="this torch build cannot pack oneDNN weights")


def test_pad_groups_rounds_each_expert_up_and_pads_with_weightless_rows() -> None:
    expert_of_pair = torch.tensor([0, 0, 0, 2, 3, 3, 3, 3, 3])
    token_of_pair = torch.tensor([5, 6, 7, 1, 2, 3, 4, 8, 9])
    weights = torch.arange(1, 10, dtype=torch.float32)
    counts = torch.tensor([3, 0, 1, 5])
    tokens, pad_weights, padded = _pad_groups(expert_of_pair, token_of_pair, weights, counts, 4)
    assert padded.tolist() == [4, 0, 4, 8]
    assert tokens.tolist() == [5, 6, 7, 0, 1, 0, 0, 0, 2, 3, 4, 8, 9, 0, 0, 0]
    assert pad_weights.tolist() == [1, 2, 3, 0, 4, 0, 0, 0, 5, 6, 7, 8, 9, 0, 0, 0]


@pytest.mark.parametrize("multiple", [2, 8, 64])
def test_padding_rows_do_not_change_the_moe_output(multiple: int) -> None:
    moe = MoE(CONFIG)
    gen = torch.Generator().manual_seed(3)
    for param in moe.parameters():
        param.data = torch.randn(param.shape, generator=gen) * 0.3
    x = torch.randn(37, CONFIG.hidden_size, generator=gen)
    moe.experts.row_multiple = 1
    plain = moe(x)
    moe.experts.row_multiple = multiple
    torch.testing.assert_close(moe(x), plain, rtol=0, atol=1e-6)


def _models(seed: int = 11, **options):
    state = {k: torch.from_numpy(v) for k, v in random_state_dict(CONFIG, seed=seed).items()}
    return build_model(state, CONFIG, device="cpu", dtype="bfloat16", **options)


@needs_packing
def test_bfloat16_cpu_experts_are_packed_by_default_and_give_the_unpacked_logits() -> None:
    packed, plain = _models(expert_kernel="torch"), _models(expert_kernel="torch", pack_experts=False)
    assert all(isinstance(layer.mlp.experts, PackedExperts) for layer in packed.layers)
    assert not any(isinstance(layer.mlp.experts, PackedExperts) for layer in plain.layers)
    assert not any("gate_up_proj" == name.rsplit(".", 1)[-1] for name, _ in packed.named_parameters())
    ids, mask = random_inputs(CONFIG.vocab_size, 3, 70, seed=2)
    ids, mask = torch.from_numpy(ids), torch.from_numpy(mask)
    with torch.inference_mode():
        a, b = packed(ids, mask), plain(ids, mask)
    real = mask.bool()
    # Same bfloat16 products with float32 accumulation; only the summation order inside oneDNN may differ.
    assert (a - b)[real].abs().max().item() <= 2e-2 * b[real].abs().max().item()
    assert (a.argmax(-1) == b.argmax(-1))[real].float().mean().item() >= 0.99


@needs_packing
def test_packed_matrices_hold_exactly_the_loaded_weights() -> None:
    state = random_state_dict(CONFIG, seed=5)
    model = _models(seed=5, expert_kernel="torch")
    experts = model.layers[1].mlp.experts
    for name in ("gate_up_proj", "down_proj"):
        stored = torch.from_numpy(state[f"model.layers.1.mlp.experts.{name}"]).bfloat16()
        for expert in (0, CONFIG.num_local_experts - 1):
            assert torch.equal(experts.expert_weight(name, expert, torch.bfloat16), stored[expert])


def test_float32_and_forced_float32_experts_are_never_packed() -> None:
    state = {k: torch.from_numpy(v) for k, v in random_state_dict(CONFIG, seed=1).items()}
    f32 = build_model(state, CONFIG, device="cpu", dtype="float32")
    assert not any(isinstance(layer.mlp.experts, PackedExperts) for layer in f32.layers)
    with pytest.raises(ConfigError, match="pack_experts=True needs dense bfloat16 experts"):
        build_model(state, CONFIG, device="cpu", dtype="float32", pack_experts=True)
    with pytest.raises(ConfigError, match="pack_experts=True"):
        build_model(state, CONFIG, device="cpu", dtype="bfloat16", expert_precision="float32", pack_experts=True)
