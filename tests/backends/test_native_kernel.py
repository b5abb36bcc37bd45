"""The native expert kernel: building, refusing, exact dequantization, and the same products as torch."""
from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from spacy_privfilter.backends import native  # noqa: E402
from spacy_privfilter.backends.torch_backend import build_model, load  # noqa: E402
from spacy_privfilter.backends.torch_model import Experts  # noqa: E402
from spacy_privfilter.backends.torch_native import NativeExperts, NativeTopK  # noqa: E402
from spacy_privfilter.backends.torch_packed import PackedExperts, packing_available  # noqa: E402
from spacy_privfilter.backends.torch_quant import QuantizedExperts, dequantize_codes  # noqa: E402
from spacy_privfilter.checkpoint import QuantizedWeight, inspect_checkpoint  # noqa: E402
from spacy_privfilter.checkpoint.affine import quantize  # noqa: E402
from spacy_privfilter.errors import ConfigError  # noqa: E402
from spacy_privfilter.testing import random_inputs, random_state_dict, tiny_config, write_random_checkpoint  # noqa: E402

CONFIG = tiny_config(vocab_size=300)
KERNEL = native.load_kernel()
needs_kernel = pytest.mark.skipif(KERNEL is None, reason=f"native kernel unavailable: {native.unavailable_reason()}")


@pytest.fixture()
def fresh_kernel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """load_kernel() with an empty cache folder; the process-wide cached kernel is restored afterwards."""
    monkeypatch.setenv("SPACY_PRIVFILTER_KERNEL_CACHE", str(tmp_path / "kernels"))
    native.load_kernel.cache_clear()
    yield native.load_kernel
    native.load_kernel.cache_clear()
    native._reason = None


def test_without_the_cpu_features_the_kernel_is_refused_with_the_reason(fresh_kernel, monkeypatch) -> None:
    monkeypatch.setattr(native, "_cpu_flags", lambda: {"avx512f", "avx512bw"})
    assert fresh_kernel() is None
    assert "lacks avx512vl, avx512_bf16" in native.unavailable_reason()


def test_a_compiler_that_fails_leaves_no_library_and_a_reason(fresh_kernel, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(native, "_cpu_flags", lambda: set(native.CPU_FLAGS))
    monkeypatch.setattr(native.platform, "system", lambda: "Linux")
    monkeypatch.setattr(native.platform, "machine", lambda: "x86_64")
    monkeypatch.setenv("CXX", "false")
    assert fresh_kernel() is None
    assert "false failed to build the kernel" in native.unavailable_reason()
    assert not list((tmp_path / "kernels").glob("*"))  # no partial file left behind


def test_the_environment_switch_disables_the_kernel(fresh_kernel, monkeypatch) -> None:
    monkeypatch.setenv("SPACY_PRIVFILTER_NATIVE", "0")
    assert fresh_kernel() is None and "SPACY_PRIVFILTER_NATIVE=0" in native.unavailable_reason()
    with pytest.raises(ConfigError, match="expert_kernel='native' cannot be used: disabled by"):
        build_model(_state(), CONFIG, device="cpu", dtype="bfloat16", expert_kernel="native")


@needs_kernel
def test_the_kernel_is_built_once_and_then_read_from_the_cache(fresh_kernel, tmp_path: Path) -> None:
    first = fresh_kernel()
    assert first is not None and first.path.parent == tmp_path / "kernels"
    stamp = first.path.stat().st_mtime_ns
    fresh_kernel.cache_clear()
    second = fresh_kernel()
    assert second.path == first.path and second.path.stat().st_mtime_ns == stamp


def _state(seed: int = 11) -> dict:
    return {k: torch.from_numpy(v) for k, v in random_state_dict(CONFIG, seed=seed).items()}


def _experts(quantized: bool, seed: int = 3, config=CONFIG) -> Experts:
    """Random experts (hidden 64 -> 2 x 64 -> 64), dense bf16 or 8-bit with group size 32 (MLX's format)."""
    rng = np.random.default_rng(seed)
    experts = Experts(config)
    weights = {}
    for name in ("gate_up_proj", "down_proj"):
        values = rng.standard_normal(getattr(experts, name).shape).astype(np.float32) * 0.2
        bias = getattr(experts, name + "_bias")
        bias.data = torch.from_numpy(rng.standard_normal(bias.shape).astype(np.float32) * 0.1).bfloat16()
        getattr(experts, name).data = torch.from_numpy(values).bfloat16()
        words, scales, offsets = quantize(values.swapaxes(-1, -2), group_size=32, bits=8, dtype="bfloat16")
        weights[name] = QuantizedWeight(weight=words, scales=scales, biases=offsets, group_size=32, bits=8)
    if quantized:  # MLX layout [E, out, in]
        experts = QuantizedExperts.from_experts(experts, weights["gate_up_proj"], weights["down_proj"],
                                                dtype=torch.bfloat16, device=torch.device("cpu"))
    experts.compute_dtype = torch.bfloat16
    return experts


@needs_kernel
@pytest.mark.parametrize("quantized", [False, True], ids=["bf16", "8bit"])
def test_native_weights_are_bitwise_the_reference_weights(quantized: bool) -> None:
    reference = _experts(quantized)
    fast = NativeExperts.from_experts(reference, KERNEL)
    for name in ("gate_up_proj", "down_proj"):
        for expert in range(CONFIG.num_local_experts):
            want = reference.expert_weight(name, expert, torch.bfloat16)
            assert torch.equal(fast.expert_weight(name, expert, torch.bfloat16), want)
    if quantized:  # and that reference is the affine formula, scale * q + bias per group, rounded once
        tensor = reference.gate_up_proj
        want = dequantize_codes(tensor.codes[2], tensor.scales[2], tensor.biases[2], group_size=32,
                                dtype=torch.bfloat16)
        assert torch.equal(fast.expert_weight("gate_up_proj", 2, torch.bfloat16).t(), want)


@needs_kernel
@pytest.mark.parametrize("quantized", [False, True], ids=["bf16", "8bit"])
def test_a_last_panel_of_fewer_blocks_packs_and_multiplies_like_the_others(quantized: bool) -> None:
    """Hidden 96: the down projection's 6 column blocks are packed as a panel of 4 and a panel of 2."""
    config = tiny_config(vocab_size=300, hidden_size=96, intermediate_size=96)
    reference = _experts(quantized, config=config)
    fast = NativeExperts.from_experts(reference, KERNEL)
    assert (fast.down_proj_codes if quantized else fast.down_proj_packed).shape[1] == 6  # column blocks
    for name in ("gate_up_proj", "down_proj"):
        for expert in range(config.num_local_experts):
            assert torch.equal(fast.expert_weight(name, expert, torch.bfloat16),
                               reference.expert_weight(name, expert, torch.bfloat16))
    counts = [0, 1, 5, 7, 0, 2, 13, 3]
    rows = torch.randn(sum(counts), 96, generator=torch.Generator().manual_seed(4)).bfloat16()
    experts = [e for e, c in enumerate(counts) if c]
    got = fast._matmuls("down_proj", experts, counts, rows, torch.bfloat16).float()
    want = reference._matmuls("down_proj", experts, counts, rows, torch.bfloat16).float()
    # bf16: only the order of the float32 additions differs; 8-bit: the kernel's weights are the unrounded ones.
    assert torch.allclose(got, want, rtol=2 ** -6, atol=2e-2), (got - want).abs().max()
    assert (got - want).abs().max() < 0.05 * want.abs().max()


@needs_kernel
def test_bf16_grouped_products_equal_per_expert_addmm() -> None:
    reference = _experts(False, seed=5)
    fast = NativeExperts.from_experts(reference, KERNEL)
    counts, experts, rows = _rows()
    for name in ("gate_up_proj", "down_proj"):  # hidden and intermediate sizes are both 64 here
        got = fast._matmuls(name, experts, counts, rows, torch.bfloat16).float()
        want = reference._matmuls(name, experts, counts, rows, torch.bfloat16).float()
        assert got.shape == want.shape
        # bf16 products summed in float32 by both; only the order of additions differs (<= 1 bf16 step).
        assert torch.allclose(got, want, rtol=2 ** -7, atol=1e-3), (got - want).abs().max()
    # The gate_up product with the clamped SwiGLU in the kernel's epilogue (halves interleaved in memory).
    got = fast._hidden(experts, counts, rows, torch.bfloat16).float()
    want = reference._hidden(experts, counts, rows, torch.bfloat16).float()
    assert got.shape == want.shape == (sum(counts), CONFIG.intermediate_size)
    assert torch.allclose(got, want, rtol=2 ** -6, atol=2e-3), (got - want).abs().max()
    assert (got == want).float().mean() > 0.9  # mostly bitwise: only the float32 sums' order and exp differ


def _rows() -> tuple[list[int], list[int], torch.Tensor]:
    """0 to 13 rows per expert (every register tile, empty experts); one row with an outlier 300x its peers."""
    counts = [0, 1, 2, 3, 4, 5, 7, 13]
    rows = torch.randn(sum(counts), CONFIG.hidden_size, generator=torch.Generator().manual_seed(1))
    rows[3, 5] = 300.0
    return counts, [e for e, c in enumerate(counts) if c], rows.bfloat16()


@needs_kernel
def test_8bit_grouped_products_use_the_exact_affine_weights() -> None:
    """The kernel multiplies by scale * q + bias itself (not rounded to bf16): its products are within the final
    bf16 rounding of the float64 products, closer than those of the dequantized bf16 weights."""
    reference = _experts(True, seed=5)
    fast = NativeExperts.from_experts(reference, KERNEL)
    counts, experts, rows = _rows()
    owner = np.repeat(np.arange(len(counts)), counts)
    for name in ("gate_up_proj", "down_proj"):
        tensor = getattr(reference, name)  # codes [E, out, in], scales and biases [E, out, in / 32]
        exact = (tensor.codes.double() * tensor.scales.double().repeat_interleave(32, -1)
                 + tensor.biases.double().repeat_interleave(32, -1))
        bias = getattr(reference, name + "_bias").double()
        truth = torch.einsum("rk,rnk->rn", rows.double(), exact[owner]) + bias[owner]
        got = fast._matmuls(name, experts, counts, rows, torch.bfloat16).double()
        dequantized = reference._matmuls(name, experts, counts, rows, torch.bfloat16).double()
        # Allowed: the final rounding to bf16 (half a step, <= 2^-8 relative), float32 sums, and x's values more
        # than 2^7 below their group's largest rounding at the int16 step 2^E, E = floor(log2(largest)) - 14.
        x = rows.double().reshape(len(rows), -1, 32)
        step = torch.exp2(torch.floor(torch.log2(x.abs().amax(-1))) - 14)  # [rows, groups]
        slack = torch.einsum("rg,rngk->rn", step / 2, exact[owner].abs().reshape(len(rows), exact.shape[1], -1, 32))
        size = torch.einsum("rk,rnk->rn", rows.double().abs(), exact[owner].abs())
        error = (got - truth).abs()
        assert (error <= 2 ** -8 * truth.abs() + slack + 1e-6 * size).all(), (error - 2 ** -8 * truth.abs()).max()
        assert slack[3].min() > 10 * slack[:3].max()  # only the outlier row has values that round
        assert error.mean() < 0.8 * (dequantized - truth).abs().mean()
    # The fused SwiGLU epilogue applies the reference activation to the kernel's own gate_up products.
    got = fast._hidden(experts, counts, rows, torch.bfloat16).float()
    want = reference.swiglu(fast._matmuls("gate_up_proj", experts, counts, rows, torch.bfloat16)).float()
    assert got.shape == want.shape == (sum(counts), CONFIG.intermediate_size)
    assert torch.allclose(got, want, rtol=2 ** -7, atol=1e-3), (got - want).abs().max()


@needs_kernel
def test_native_models_match_the_torch_kernels_and_8bit_keep_is_as_accurate_as_dequantize(tmp_path: Path) -> None:
    folder = write_random_checkpoint(tmp_path / "q8", CONFIG, format="mlx-8bit", dtype="bfloat16", seed=4)
    info = inspect_checkpoint(folder)
    kept, dense = load(info, device="cpu"), load(info, device="cpu", quantized_experts="dequantize")
    torch_kept = load(info, device="cpu", expert_kernel="torch")
    assert all(isinstance(layer.mlp.experts, NativeExperts) for layer in kept.model.layers)
    assert isinstance(torch_kept.model.layers[0].mlp.experts, QuantizedExperts)
    # the kept codes know where they lie on disk: the native repacking reads them from there, not through the map
    assert torch_kept.model.layers[0].mlp.experts.gate_up_proj.source is not None
    assert kept.model.layers[0].mlp.experts.gate_up_proj_codes.dtype == torch.uint8
    # Both read embedding rows from the file (the mapped table is never brought in), and the native repacking
    # read the expert codes from the file too: nothing keeps the kept 8-bit model's mapped pages resident.
    assert kept.model.embed_tokens.source is not None and torch_kept.model.embed_tokens.source is not None
    ids, mask = random_inputs(CONFIG.vocab_size, 3, 70, seed=2)
    a, b, c = kept.logits(ids, mask), dense.logits(ids, mask), torch_kept.logits(ids, mask)
    real = mask.astype(bool)
    f32 = load(info, device="cpu", dtype="float32").logits(ids, mask)  # scale * q + bias in float32
    # Kept 8-bit multiplies by the exact affine weights, dequantized-at-load by them rounded to bf16: within
    # float rounding of each other, and kept is at least as close to the float32 run.
    _as_accurate_as_torch(a, b, f32, real)
    # Against torch's kernels only bf16 rounding differs (summation order), so both are as far from the
    # float32 run of the same weights, and agree with each other on nearly every argmax.
    _as_accurate_as_torch(a, c, f32, real)


def _as_accurate_as_torch(native_logits, torch_logits, f32_logits, real) -> None:
    """The native bf16 run is as close to the float32 run as torch's bf16 run (a tiny random model amplifies
    single bf16 rounding steps, so the max difference between two bf16 runs says little on its own)."""
    ours = np.abs(native_logits - f32_logits)[real].mean()
    theirs = np.abs(torch_logits - f32_logits)[real].mean()
    assert ours <= 1.5 * theirs + 1e-3, (ours, theirs)
    assert (native_logits.argmax(-1) == torch_logits.argmax(-1))[real].mean() >= 0.97


@needs_kernel
def test_a_kept_8bit_model_on_the_kernel_leaves_its_weight_file_unmapped(tmp_path: Path) -> None:
    """Expert codes are read from the file into the kernel's layout and embedding rows are read per call, so
    once the model is built nothing maps the file: no page of it stays resident (the embedding's scales and
    biases used to be views of the map, which kept all of it alive)."""
    maps = Path("/proc/self/maps")
    if not maps.is_file():
        pytest.skip("needs /proc/self/maps (Linux)")
    folder = tmp_path / "q8"
    folder = write_random_checkpoint(folder, CONFIG, format="mlx-8bit", dtype="bfloat16", seed=5)
    backend = load(inspect_checkpoint(folder), device="cpu")
    assert all(isinstance(layer.mlp.experts, NativeExperts) for layer in backend.model.layers)
    gc.collect()
    assert not [line for line in maps.read_text().splitlines() if str(folder) in line]
    ids, mask = random_inputs(CONFIG.vocab_size, 2, 9, seed=4)
    assert np.isfinite(backend.logits(ids, mask)).all()  # embedding rows still come from the file


@needs_kernel
def test_bfloat16_models_use_the_kernel_unless_told_otherwise() -> None:
    state = _state()
    auto = build_model(state, CONFIG, device="cpu", dtype="bfloat16")
    assert all(isinstance(layer.mlp.experts, NativeExperts) for layer in auto.layers)
    assert not any(name.endswith(("gate_up_proj", "down_proj")) for name, _ in auto.named_parameters())
    plain = build_model(state, CONFIG, device="cpu", dtype="bfloat16", expert_kernel="torch", pack_experts=False)
    assert type(plain.layers[0].mlp.experts) is Experts
    if packing_available():
        onednn = build_model(state, CONFIG, device="cpu", dtype="bfloat16", pack_experts=True)
        assert isinstance(onednn.layers[0].mlp.experts, PackedExperts)
    f32 = build_model(state, CONFIG, device="cpu", dtype="float32")
    ids, mask = (torch.from_numpy(a) for a in random_inputs(CONFIG.vocab_size, 2, 50, seed=7))
    with torch.inference_mode():
        a, b, c = (model(ids, mask).numpy() for model in (auto, plain, f32))
    _as_accurate_as_torch(a, b, c, mask.bool().numpy())
    assert all(layer.self_attn.native is not None for layer in auto.layers)  # attention runs natively too
    assert all(isinstance(layer.mlp.select, NativeTopK) for layer in auto.layers)  # and the router's top-k
    assert plain.layers[0].mlp.select is torch.topk


def test_native_refuses_what_it_cannot_run() -> None:
    state = _state()
    with pytest.raises(ConfigError, match="expert_kernel must be one of auto, native, torch; got 'fast'"):
        build_model(state, CONFIG, device="cpu", expert_kernel="fast")
    with pytest.raises(ConfigError, match="expert_kernel='native' cannot be used: .*bfloat16 experts on the CPU"):
        build_model(state, CONFIG, device="cpu", dtype="float32", expert_kernel="native")
    with pytest.raises(ConfigError, match="pack_experts=True asks for oneDNN"):
        build_model(state, CONFIG, device="cpu", dtype="bfloat16", expert_kernel="native", pack_experts=True)
    f32 = build_model(state, CONFIG, device="cpu", dtype="float32")  # auto: quietly the torch path
    assert type(f32.layers[0].mlp.experts) is Experts


@needs_kernel
@pytest.mark.parametrize("seq, window, heads, kv, d", [(70, 4, 4, 2, 16), (37, 128, 14, 2, 64), (300, 128, 14, 2, 64),
                                                      (33, 16, 6, 3, 32)])
def test_native_attention_equals_the_banded_torch_path(seq: int, window: int, heads: int, kv: int, d: int) -> None:
    from spacy_privfilter.backends.torch_model import Attention, RotaryEmbedding
    from spacy_privfilter.backends.torch_native import NativeAttention

    config = tiny_config(num_attention_heads=heads, num_key_value_heads=kv, head_dim=d, sliding_window=window,
                         hidden_size=64)
    attention = Attention(config, RotaryEmbedding(config))
    attention.sinks.data = torch.randn(heads, generator=torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(seq)
    q = (torch.randn(2, seq, heads, d, generator=gen) * 0.7).bfloat16()
    k = (torch.randn(2, seq, kv, d, generator=gen) * 0.7).bfloat16()
    v = torch.randn(2, seq, kv, d, generator=gen).bfloat16()
    mask = torch.ones(2, seq, dtype=torch.bool)
    mask[1, seq - seq // 3:] = False  # right padding in the second row
    mask[1, 0] = False  # and a masked key inside the band
    want = attention._banded(q, k, v, mask).float()
    got = NativeAttention(KERNEL, attention)(q, k, v, mask).float()
    real = mask  # padded queries' outputs are discarded by the model
    assert got.shape == want.shape
    diff = (got - want).abs()[real]
    assert diff.max().item() <= 2 ** -6 * max(1.0, want[real].abs().max().item()), diff.max()
    assert (got[real] == want[real]).float().mean().item() > 0.8  # mostly bitwise equal


def test_native_models_limit_the_onednn_kernel_caches(monkeypatch) -> None:
    from spacy_privfilter.backends import torch_backend

    calls = []
    monkeypatch.setattr(torch_backend, "limit_kernel_caches", lambda: calls.append(1))
    build_model(_state(), CONFIG, dtype="bfloat16", device="cpu", expert_kernel="torch")
    assert calls == []  # torch's expert kernels use oneDNN with many more shapes: its caches stay as they are
    build_model(_state(), CONFIG, dtype="bfloat16", device="cpu")
    assert calls == ([1] if KERNEL is not None else [])


@needs_kernel
@pytest.mark.parametrize("batch,seq,heads", [(1, 37, 3), (2, 130, 14)])
def test_native_rotary_is_bitwise_apply_rotary_then_scale(batch: int, seq: int, heads: int) -> None:
    from spacy_privfilter.backends.torch_model import Attention, RotaryEmbedding, apply_rotary
    from spacy_privfilter.backends.torch_native import NativeAttention

    config = tiny_config(vocab_size=300, head_dim=64, num_attention_heads=heads, num_key_value_heads=1)
    attention = Attention(config, RotaryEmbedding(config))
    native = NativeAttention(KERNEL, attention)
    cos, sin = attention.rotary(seq, torch.bfloat16, torch.device("cpu"))
    x = (torch.randn(batch, seq, heads, 64, generator=torch.Generator().manual_seed(seq)) * 3).bfloat16()
    want = apply_rotary(x, cos, sin) * attention.scale
    got = native.rotate(x.clone(), cos, sin, attention.scale)
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)


@needs_kernel
def test_native_combine_is_bitwise_the_weighted_index_add() -> None:
    """Each token receives its k routed outputs in pair order, with torch's float32 roundings."""
    fast = NativeExperts.from_experts(_experts(False), KERNEL)
    generator = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, 9, (40,), generator=generator)  # repeated tokens: the order of additions matters
    y = torch.randn(40, 64, generator=generator).bfloat16()
    weights = torch.rand(40, generator=generator)
    start = torch.randn(9, 64, generator=generator)
    want, got = start.clone(), start.clone()
    Experts._combine(fast, want, tokens, y, weights)
    fast._combine(got, tokens, y, weights)
    assert torch.equal(got, want) and not torch.equal(got, start)


@needs_kernel
@pytest.mark.parametrize("rows,n,k", [(300, 128, 4), (3000, 128, 4), (50, 32, 1), (40, 20, 16), (10, 4, 4)])
def test_native_topk_gives_torch_topk_values_and_indices(rows: int, n: int, k: int) -> None:
    logits = torch.randn(rows, n, generator=torch.Generator().manual_seed(rows + n))
    want = torch.topk(logits, k, dim=-1)
    values, indices = NativeTopK(KERNEL)(logits, k, dim=-1)
    assert torch.equal(values, want.values) and torch.equal(indices, want.indices)


@needs_kernel
def test_native_topk_leaves_ties_nan_and_autograd_to_torch() -> None:
    logits = torch.randn(64, 128, generator=torch.Generator().manual_seed(3))
    logits[5, 7] = logits[5].max()  # tied first place: torch decides the order
    logits[9, 2] = float("nan")
    logits[11] = logits[11].clamp(max=0.0)  # its largest values are all zeros
    logits[11, 2] = -0.0  # (equal to 0.0)
    values, indices = torch.empty(64, 4), torch.empty(64, 4, dtype=torch.int64)
    assert KERNEL.topk(logits.data_ptr(), 64, 128, 4, values.data_ptr(), indices.data_ptr()) == 3
    want = torch.topk(logits, 4, dim=-1)
    got = NativeTopK(KERNEL)(logits, 4, dim=-1)
    assert torch.equal(got[1], want.indices) and torch.allclose(got[0], want.values, equal_nan=True)
    # autograd, another dtype, another dim or k beyond 16: torch.topk itself
    trained = torch.randn(8, 32, requires_grad=True)
    assert NativeTopK(KERNEL)(trained, 4)[0].grad_fn is not None
    assert NativeTopK(KERNEL)(torch.randn(8, 32).bfloat16(), 4)[0].dtype == torch.bfloat16
    assert torch.equal(NativeTopK(KERNEL)(logits.t(), 4, dim=0)[1], torch.topk(logits.t(), 4, dim=0).indices)
    assert NativeTopK(KERNEL)(torch.randn(4, 64), 20)[1].shape == (4, 20)
