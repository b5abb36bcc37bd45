"""PyTorch model pieces against independent float64 references written here from the spec (section 2)."""
from __future__ import annotations


import numpy as np
import pytest

torch = pytest.importorskip("torch")

from spacy_privfilter.backends.torch_backend import TorchBackend  # noqa: E402
from spacy_privfilter.backends.torch_model import Attention, MoE, RotaryEmbedding  # noqa: E402
from spacy_privfilter.config import ModelConfig  # noqa: E402
from spacy_privfilter.testing import random_state_dict, tiny_config  # noqa: E402


def _fill(module: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for param in module.parameters():
        param.data = torch.randn(param.shape, generator=gen) * 0.3


def test_rope_frequencies_match_the_reference_values() -> None:
    # Reference values from transformers 5.23 for the default config (architecture.md section 2.2).
    rotary = RotaryEmbedding(ModelConfig())
    theta = rotary.inv_freq
    expected = {0: 1.0, 1: 6.890442967e-01, 8: 5.081327260e-02, 9: 3.170569614e-02, 17: 1.293186942e-04,
                18: 3.830881178e-05, 31: 3.023511397e-07}
    for i, value in expected.items():
        assert theta[i].item() == pytest.approx(value, rel=1e-6)
    assert rotary.magnitude == pytest.approx(1.3465735902799727)
    cos, _ = rotary(2, torch.float32, torch.device("cpu"))
    assert cos[1, :3].tolist() == pytest.approx([0.72755688, 1.03935814, 1.19763231], rel=1e-6)


def _dense_attention(attn: Attention, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """float64 attention with an explicit T x T band mask and a sink column (spec 2.2)."""
    x = x.double()
    b, t, _ = x.shape
    h, kv, d, w = attn.num_heads, attn.num_kv_heads, attn.head_dim, attn.window
    lin = lambda m, v: v @ m.weight.double().T + m.bias.double()  # noqa: E731
    q, k, v = (lin(attn.q_proj, x).view(b, t, h, d), lin(attn.k_proj, x).view(b, t, kv, d),
               lin(attn.v_proj, x).view(b, t, kv, d))
    pos = torch.arange(t, dtype=torch.float64)
    ang = pos[:, None] * attn.rotary.inv_freq.double()[None]
    c, s = (ang.cos() * attn.rotary.magnitude)[:, None], (ang.sin() * attn.rotary.magnitude)[:, None]

    def rope(z: torch.Tensor) -> torch.Tensor:
        out = z.clone()
        out[..., 0::2] = z[..., 0::2] * c - z[..., 1::2] * s
        out[..., 1::2] = z[..., 1::2] * c + z[..., 0::2] * s
        return out * d ** -0.25

    q, k = rope(q), rope(k)
    k, v = k.repeat_interleave(h // kv, dim=2), v.repeat_interleave(h // kv, dim=2)
    scores = torch.einsum("bihd,bjhd->bhij", q, k)
    band = (pos[:, None] - pos[None, :]).abs() <= w
    allowed = band[None, None] & mask[:, None, None, :]
    scores = scores.masked_fill(~allowed, float("-inf"))
    sinks = attn.sinks.double().view(1, h, 1, 1).expand(b, h, t, 1)
    probs = torch.softmax(torch.cat([scores, sinks], dim=-1), dim=-1)[..., :-1]
    out = torch.einsum("bhij,bjhd->bihd", probs, v).reshape(b, t, h * d)
    return lin(attn.o_proj, out)


@pytest.mark.parametrize("heads,kv_heads,window,seq,block", [
    (4, 2, 4, 23, 8), (7, 1, 5, 37, 6), (2, 2, 3, 5, 8), (6, 2, 8, 64, 16), (4, 4, 6, 19, None), (14, 2, 3, 40, 3),
])
def test_banded_attention_matches_dense_reference(heads: int, kv_heads: int, window: int, seq: int,
                                                  block: int | None) -> None:
    config = tiny_config(num_attention_heads=heads, num_key_value_heads=kv_heads, sliding_window=window)
    attn = Attention(config, RotaryEmbedding(config), block_size=block)
    _fill(attn, seed=heads * 100 + seq)
    x = torch.randn(2, seq, config.hidden_size, generator=torch.Generator().manual_seed(seq))
    mask = torch.ones(2, seq, dtype=torch.bool)
    mask[1, seq - seq // 3:] = False  # right padding in the second row
    with torch.no_grad():
        got = attn(x, mask).double()
    want = _dense_attention(attn, x, mask)
    assert (got - want)[mask].abs().max().item() < 1e-4


@pytest.mark.parametrize("top_k", [1, 2, 3, 4])
def test_moe_matches_dense_all_experts_reference(top_k: int) -> None:
    config = tiny_config(num_experts_per_tok=top_k, intermediate_size=48)
    moe = MoE(config)
    _fill(moe, seed=top_k)
    x = torch.randn(50, config.hidden_size, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        got = moe(x).double()
    xd = x.double()
    logits = xd @ moe.router.weight.double().T + moe.router.bias.double()
    top, ids = logits.topk(top_k, dim=-1)
    weights = torch.zeros_like(logits).scatter(1, ids, torch.softmax(top, dim=-1))  # [N, E], zero off the top-k
    experts = moe.experts
    gate_up = (torch.einsum("nd,edf->enf", xd, experts.gate_up_proj.double())
               + experts.gate_up_proj_bias.double()[:, None])
    gate, up = gate_up[..., :48].clamp(max=7.0), gate_up[..., 48:].clamp(-7.0, 7.0)
    act = gate * torch.sigmoid(1.702 * gate) * (up + 1)
    y = torch.einsum("enf,efd->end", act, experts.down_proj.double()) + experts.down_proj_bias.double()[:, None]
    want = torch.einsum("ne,end->nd", weights, y)
    assert (got - want).abs().max().item() < 1e-4


def _backend(config: ModelConfig, **options) -> TorchBackend:
    weights = {k: torch.from_numpy(v) for k, v in random_state_dict(config, seed=1).items()}
    return TorchBackend.from_state_dict(weights, config, device="cpu", dtype="float32", **options)


def test_right_padding_does_not_change_real_tokens() -> None:
    config = tiny_config(vocab_size=300, sliding_window=3)
    backend = _backend(config, block_size=4)
    rng = np.random.default_rng(0)
    long_ids, short_ids = rng.integers(0, 300, 29), rng.integers(0, 300, 13)
    batch = np.full((2, 29), config.pad_token_id % 300)
    batch[0], batch[1, :13] = long_ids, short_ids
    mask = np.zeros((2, 29), dtype=bool)
    mask[0], mask[1, :13] = True, True
    together = backend.logits(batch, mask)
    alone = backend.logits(short_ids[None], np.ones((1, 13), dtype=bool))
    assert together.dtype == np.float32 and together.shape == (2, 29, config.num_labels)
    assert np.abs(together[1, :13] - alone[0]).max() < 1e-5
    assert np.abs(together[0] - backend.logits(long_ids[None], np.ones((1, 29), bool))[0]).max() < 1e-5


def test_block_size_does_not_change_logits() -> None:
    config = tiny_config(vocab_size=300, sliding_window=5)
    ids = np.random.default_rng(1).integers(0, 300, (1, 61))
    mask = np.ones_like(ids, dtype=bool)
    reference = _backend(config, block_size=61).logits(ids, mask)  # one block: plain masked attention
    for block in (3, 5, 16):
        assert np.abs(_backend(config, block_size=block).logits(ids, mask) - reference).max() < 1e-5


def test_20000_token_input_windowed_equals_unwindowed_banded_run() -> None:
    from spacy_privfilter.detector import Detector

    config = tiny_config(vocab_size=1000, num_local_experts=4, num_experts_per_tok=2, hidden_size=32,
                         intermediate_size=32, head_dim=8)
    backend = _backend(config)
    ids = np.random.default_rng(2).integers(0, 1000, 20_000)
    full = backend.logits(ids[None], np.ones((1, ids.size), dtype=bool))[0]
    detector = Detector(backend, max_tokens=3000, max_batch_tokens=6000)
    windowed = detector.document_logits([ids])[0]
    assert np.abs(windowed - full).max() < 1e-4
    # Too little context does change the logits, so the comparison above can fail.
    short = backend.logits(ids[None, :2000], np.ones((1, 2000), dtype=bool))[0]
    assert np.abs(short[-5:] - full[1995:2000]).max() > 1e-3


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_inference_runs_the_moe_in_token_chunks_with_the_same_bits(monkeypatch, dtype: str) -> None:
    import spacy_privfilter.backends.torch_model as torch_model

    config = tiny_config(vocab_size=300, sliding_window=3)
    weights = {k: torch.from_numpy(v) for k, v in random_state_dict(config, seed=3).items()}
    model = TorchBackend.from_state_dict(weights, config, device="cpu", dtype=dtype).model
    ids = torch.as_tensor(np.random.default_rng(3).integers(0, 300, (3, 37)))
    mask = torch.zeros(3, 37, dtype=torch.bool)
    mask[0], mask[1, :20], mask[2, :5] = True, True, True
    with torch.enable_grad():  # the autograd path: out-of-place residual, one MoE call for all real tokens
        padded_ref, single_ref = model(ids, mask), model(ids[:1], mask[:1])
    rows_per_call = []
    moe_forward = torch_model.MoE.forward
    monkeypatch.setattr(torch_model.MoE, "forward", lambda self, x: rows_per_call.append(len(x)) or moe_forward(self, x))
    monkeypatch.setattr(torch_model, "_MOE_TOKENS_PER_CHUNK", 16)
    with torch.inference_mode():
        padded, single = model(ids, mask), model(ids[:1], mask[:1])
    assert torch.equal(padded[mask], padded_ref[mask]) and torch.equal(single, single_ref)
    layers = config.num_hidden_layers
    assert rows_per_call == layers * [16, 16, 16, 14] + layers * [16, 16, 5]  # 62 real tokens, then 37
