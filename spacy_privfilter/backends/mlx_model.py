"""The Privacy Filter token classifier in MLX.

Mirrors ``backends/torch_model.py`` class for class and attribute for attribute, so a diff of the two
files shows only framework differences. Parameter paths are the canonical HF names without the leading
``model.`` (``layers.0.self_attn.q_proj.weight``, ``score.bias``), except that each expert projection is a
module (``mlp.experts.gate_up_proj.weight`` / ``.bias``). The math is described in docs/architecture.md §2:
pre-norm blocks, banded bidirectional attention with per-head sinks (natural-log units) and a one-sided
window, interleaved YaRN RoPE, and a top-k mixture of experts with a clamped SwiGLU.
 Any linear layer, the embedding and each expert
projection may be affine-quantized: ``nn.quantize`` swaps in ``QuantizedLinear`` / ``QuantizedEmbedding`` /
``QuantizedExpertLinear`` (each module's ``to_quantized``) where the checkpoint stores scales, as
``mlx_backend.build_model`` does.
"""
from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..config import ModelConfig


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in float32 (scale applied in float32), cast back to the input dtype."""

    def __init__(self, hidden_size: int, *, eps: float) -> None:
        super().__init__()
        self.weight = mx.ones((hidden_size,))
        self.eps = eps

    def __call__(self, hidden_states: mx.array) -> mx.array:
        x = hidden_states.astype(mx.float32)
        x = x * mx.rsqrt(mx.mean(x * x, axis=-1, keepdims=True) + self.eps)
        return (x * self.weight.astype(mx.float32)).astype(hidden_states.dtype)


class RotaryEmbedding(nn.Module):
    """YaRN-scaled rotary embedding; returns cos/sin (magnitude factor folded in) for positions 0..T-1."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        dim, base, factor = config.head_dim, config.rope_theta, config.rope_factor
        pos_freqs = np.float32(base) ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim))
        inv_extrapolation = (1.0 / pos_freqs).astype(np.float32)
        inv_interpolation = (1.0 / (factor * pos_freqs)).astype(np.float32)

        def correction_dim(rotations: float) -> float:
            max_positions = config.rope_original_max_position_embeddings
            return dim * math.log(max_positions / (rotations * 2 * math.pi)) / (2 * math.log(base))

        low, high = correction_dim(config.rope_beta_fast), correction_dim(config.rope_beta_slow)
        if config.rope_truncate:
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0.0), min(high, dim - 1.0)
        if low == high:
            high += 0.001  # avoids a division by zero, as the reference does
        ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - low) / (high - low), 0, 1).astype(np.float32)
        # numpy, not mx: MLX modules treat mx arrays as parameters, and this is not a weight
        self.inv_freq = (inv_interpolation * ramp + inv_extrapolation * (1 - ramp)).astype(np.float32)
        self.magnitude = 0.1 * math.log(factor) + 1.0 if factor > 1.0 else 1.0

    def __call__(self, seq_len: int, dtype: mx.Dtype) -> tuple[mx.array, mx.array]:
        """cos, sin of shape [seq_len, head_dim // 2] for positions 0..seq_len-1, in ``dtype``."""
        # Angles in float64 (numpy: MLX has no float64 on the GPU): a float32 pos * theta loses ~1e-3 rad by
        # position 20k, so a windowed long document (positions restart at 0) would disagree with a full run.
        freqs = np.arange(seq_len, dtype=np.float64)[:, None] * self.inv_freq.astype(np.float64)[None, :]
        cos, sin = np.cos(freqs) * self.magnitude, np.sin(freqs) * self.magnitude
        return mx.array(cos.astype(np.float32)).astype(dtype), mx.array(sin.astype(np.float32)).astype(dtype)


def apply_rotary(x: mx.array, cos: mx.array, sin: mx.array) -> mx.array:
    """Rotate interleaved pairs ``(x[2i], x[2i+1])``. x: [B, T, heads, d]; cos/sin: [T, d/2]."""
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return mx.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).reshape(x.shape)


class Attention(nn.Module):
    """Banded bidirectional GQA attention with one learned sink logit per query head."""

    def __init__(self, config: ModelConfig, rotary: RotaryEmbedding, *,
                 block_size: int | None = None) -> None:
        super().__init__()
        d, h, kv = config.head_dim, config.num_attention_heads, config.num_key_value_heads
        self.head_dim, self.num_heads, self.num_kv_heads = d, h, kv
        self.window = config.sliding_window
        # Blocks as wide as the window keep the wasted (masked) share of each score row near a third.
        self.block_size = block_size or max(config.sliding_window, 64)
        self.q_proj = nn.Linear(config.hidden_size, h * d)
        self.k_proj = nn.Linear(config.hidden_size, kv * d)
        self.v_proj = nn.Linear(config.hidden_size, kv * d)
        self.o_proj = nn.Linear(h * d, config.hidden_size)
        self.sinks = mx.zeros((h,), dtype=mx.float32)
        self.rotary = rotary
        self.scale = d ** -0.25  # applied to q and k separately, after RoPE (docs/architecture.md §2.2)

    @property
    def compute_dtype(self) -> mx.Dtype:
        """The projections' matmul dtype: the stored weight dtype (the scales' dtype when quantized)."""
        return _compute_dtype(self.q_proj)

    def __call__(self, x: mx.array, key_mask: mx.array) -> mx.array:
        """x: [B, T, D]; key_mask: bool [B, T] (False = padding). Returns [B, T, D]."""
        batch, seq, _ = x.shape
        d = self.head_dim
        q = self.q_proj(x).reshape(batch, seq, self.num_heads, d)
        k = self.k_proj(x).reshape(batch, seq, self.num_kv_heads, d)
        v = self.v_proj(x).reshape(batch, seq, self.num_kv_heads, d)
        cos, sin = self.rotary(seq, q.dtype)
        q = apply_rotary(q, cos, sin) * self.scale
        k = apply_rotary(k, cos, sin) * self.scale
        out = self._banded(q, k, v, key_mask)
        return self.o_proj(out.reshape(batch, seq, self.num_heads * d).astype(x.dtype))

    def _banded(self, q: mx.array, k: mx.array, v: mx.array, key_mask: mx.array) -> mx.array:
        """Block-banded attention (token i sees j iff abs(i - j) <= window; no T x T matrix).

        q: [B, T, H, d]; k, v: [B, T, KV, d]; returns [B, T, H, d] in v's dtype. Scores and the softmax
        over [scores, sink] run in float32.
        """
        batch, seq, _, d = q.shape
        kv, groups, w = self.num_kv_heads, self.num_heads // self.num_kv_heads, self.window
        block = min(self.block_size, seq)
        n_blocks = -(-seq // block)
        padded = n_blocks * block
        # Keys of block b span [b*block - pad, (b+1)*block + pad); pad never exceeds what other blocks hold.
        pad = min(w, padded - block)
        span = block + 2 * pad
        q = mx.pad(q, [(0, 0), (0, padded - seq), (0, 0), (0, 0)])
        k = mx.pad(k, [(0, 0), (pad, padded - seq + pad), (0, 0), (0, 0)])
        v = mx.pad(v, [(0, 0), (pad, padded - seq + pad), (0, 0), (0, 0)])
        valid = mx.pad(key_mask, [(0, 0), (pad, padded - seq + pad)], constant_values=False)
        # [B, n_blocks, KV, G * block, d]: the G query heads sharing a KV head are stacked along the rows.
        q_blocks = (q.reshape(batch, n_blocks, block, kv, groups, d).transpose(0, 1, 3, 4, 2, 5)
                    .reshape(batch, n_blocks, kv, groups * block, d))
        windows = mx.arange(n_blocks)[:, None] * block + mx.arange(span)[None, :]  # [n_blocks, span]
        k_windows = k[:, windows].transpose(0, 1, 3, 4, 2)  # [B, n_blocks, KV, d, span]
        v_windows = v[:, windows].transpose(0, 1, 3, 2, 4)  # [B, n_blocks, KV, span, d]
        valid_windows = valid[:, windows]  # [B, n_blocks, span]
        i = mx.arange(block)[:, None]
        j = mx.arange(span)[None, :]
        band = mx.abs(i - j + pad) <= w                                               # [block, span]
        allowed = band[None, None, None, None] & valid_windows[:, :, None, None, None, :]
        sinks = mx.broadcast_to(self.sinks.astype(mx.float32).reshape(1, 1, kv, groups, 1, 1),
                                (batch, n_blocks, kv, groups, block, 1))
        scores = (q_blocks @ k_windows).astype(mx.float32).reshape(batch, n_blocks, kv, groups, block, span)
        scores = mx.where(allowed, scores, -mx.inf)
        # The sink is a value-less extra column: it only absorbs probability mass.
        probs = mx.softmax(mx.concatenate([scores, sinks], axis=-1), axis=-1, precise=True)[..., :-1]
        probs = probs.astype(v.dtype).reshape(batch, n_blocks, kv, groups * block, span)
        out = probs @ v_windows
        out = (out.reshape(batch, n_blocks, kv, groups, block, d).transpose(0, 1, 4, 2, 3, 5)
               .reshape(batch, padded, kv * groups, d))
        return out[:, :seq]


class ExpertLinear(nn.Module):
    """One projection of every expert: ``weight`` [E, in, out] as in HF, ``bias`` [E, out].

    The MLX counterpart of mlx-lm's ``SwitchLinear``; ``to_quantized`` returns the quantized sibling.
    """

    def __init__(self, num_experts: int, input_dims: int, output_dims: int) -> None:
        super().__init__()
        self.weight = mx.zeros((num_experts, input_dims, output_dims))
        self.bias = mx.zeros((num_experts, output_dims))

    @property
    def stored_dtype(self) -> mx.Dtype:
        return self.weight.dtype

    def to_quantized(self, group_size: int = 64, bits: int = 8, mode: str = "affine",
                     **_: object) -> "QuantizedExpertLinear":
        """An empty quantized sibling of this shape (``nn.quantize`` calls this; weights are loaded after)."""
        return QuantizedExpertLinear(*self.weight.shape, group_size=group_size, bits=bits, mode=mode)

    def gather(self, x: mx.array, expert_ids: mx.array, dtype: mx.Dtype) -> mx.array:
        """x: [P, 1, in] in ``dtype``, rows grouped by ``expert_ids`` [P] -> ``x @ W[e]`` [P, 1, out]."""
        return mx.gather_mm(x, self.weight.astype(dtype), rhs_indices=expert_ids, sorted_indices=True)

    def expert_weight(self, expert: int) -> mx.array:
        """Dense float32 [in, out] weight of one expert."""
        return self.weight[expert].astype(mx.float32)


class QuantizedExpertLinear(nn.Module):
    """``ExpertLinear`` with an affine-quantized weight in MLX's transposed [E, out, in] layout, run with
    ``gather_qmm(transpose=True)``."""

    def __init__(self, num_experts: int, input_dims: int, output_dims: int, *, group_size: int, bits: int,
                 mode: str) -> None:
        super().__init__()
        self.group_size, self.bits, self.mode = group_size, bits, mode
        self.weight = mx.zeros((num_experts, output_dims, input_dims * bits // 32), dtype=mx.uint32)
        self.scales = mx.zeros((num_experts, output_dims, input_dims // group_size))
        self.biases = mx.zeros((num_experts, output_dims, input_dims // group_size))
        self.bias = mx.zeros((num_experts, output_dims))

    @property
    def stored_dtype(self) -> mx.Dtype:
        return self.scales.dtype

    def gather(self, x: mx.array, expert_ids: mx.array, dtype: mx.Dtype) -> mx.array:
        return mx.gather_qmm(x, self.weight, self.scales, self.biases, rhs_indices=expert_ids, transpose=True,
                             group_size=self.group_size, bits=self.bits, mode=self.mode, sorted_indices=True)

    def expert_weight(self, expert: int) -> mx.array:
        dense = mx.dequantize(self.weight[expert], self.scales[expert], self.biases[expert],
                              group_size=self.group_size, bits=self.bits, mode=self.mode)
        return dense.astype(mx.float32).T


class Experts(nn.Module):
    """Per-expert clamped SwiGLU FFN over two ``ExpertLinear`` projections (``y = x @ W[e] + b[e]``).

    ``compute_dtype`` is the matmul dtype (None: the stored dtype); SwiGLU and the combine are float32.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        e, dim, inter = config.num_local_experts, config.hidden_size, config.intermediate_size
        self.num_experts = e
        self.gate_up_proj = ExpertLinear(e, dim, 2 * inter)
        self.down_proj = ExpertLinear(e, inter, dim)
        self.alpha, self.limit = config.swiglu_alpha, config.swiglu_limit
        self.compute_dtype: mx.Dtype | None = None
        # None: per-expert float32 matmuls where the CPU gather kernels are missing or slow (_looped_matmul),
        # gather_mm / gather_qmm otherwise; True / False force one path.
        self.looped: bool | None = None

    def swiglu(self, gate_up: mx.array) -> mx.array:
        half = gate_up.shape[-1] // 2  # concatenated halves, not interleaved
        gate = mx.minimum(gate_up[..., :half].astype(mx.float32), self.limit)
        up = mx.clip(gate_up[..., half:].astype(mx.float32), -self.limit, self.limit)
        return gate * mx.sigmoid(gate * self.alpha) * (up + 1)

    def _gather_matmul(self, name: str, x: mx.array, expert_ids: mx.array) -> mx.array:
        """x: [P, in] rows grouped by ``expert_ids`` [P] (ascending) -> ``x @ W[e] + b[e]`` [P, out]."""
        proj = self[name]
        dtype = self.compute_dtype or proj.stored_dtype
        looped = self.looped
        if looped is None:
            looped = mx.default_device() == mx.cpu and (isinstance(proj, QuantizedExpertLinear)
                                                        or dtype != mx.float32)
        if looped:
            return self._looped_matmul(proj, x, expert_ids)
        out = proj.gather(x[:, None, :].astype(dtype), expert_ids, dtype)
        return out[:, 0, :] + mx.take(proj.bias, expert_ids, axis=0).astype(out.dtype)

    def _looped_matmul(self, proj: nn.Module, x: mx.array, expert_ids: mx.array) -> mx.array:
        """CPU path: MLX's CPU gather_mm takes float32 only and its gather_qmm is several times slower than
        a dense matmul, so each used expert runs one float32 matmul on its run of rows (the reference
        upcasts expert weights to float32 the same way)."""
        counts = np.bincount(np.array(expert_ids), minlength=self.num_experts)
        parts, start = [], 0
        for expert in np.flatnonzero(counts).tolist():
            stop = start + int(counts[expert])
            parts.append(x[start:stop].astype(mx.float32) @ proj.expert_weight(expert)
                         + proj.bias[expert].astype(mx.float32))
            start = stop
        return mx.concatenate(parts, axis=0)

    def __call__(self, x: mx.array, expert_ids: mx.array, routing_weights: mx.array) -> mx.array:
        """x: [N, D]; expert_ids, routing_weights: [N, k]. Returns the weighted sum in float32 [N, D]."""
        n_tokens, top_k = expert_ids.shape
        flat = expert_ids.reshape(-1)
        # Token-expert pairs sorted by expert, so gather_mm multiplies one contiguous run per expert.
        order = mx.argsort(flat)
        sorted_ids = flat[order]
        gate_up = self._gather_matmul("gate_up_proj", x[order // top_k], sorted_ids)
        y = self._gather_matmul("down_proj", self.swiglu(gate_up), sorted_ids)
        weighted = y.astype(mx.float32) * routing_weights.reshape(-1)[order, None].astype(mx.float32)
        return weighted[mx.argsort(order)].reshape(n_tokens, top_k, -1).sum(axis=1)


def _compute_dtype(layer: nn.Module) -> mx.Dtype:
    return layer.scales.dtype if isinstance(layer, nn.QuantizedLinear) else layer.weight.dtype


def _dense_weight(layer: nn.Module) -> mx.array:
    if isinstance(layer, nn.QuantizedLinear):
        return mx.dequantize(layer.weight, layer.scales, layer.biases, group_size=layer.group_size,
                             bits=layer.bits, mode=layer.mode)
    return layer.weight


class MoE(nn.Module):
    """float32 top-k router (softmax over the selected logits) feeding the routed experts."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.router = nn.Linear(config.hidden_size, config.num_local_experts)
        self.experts = Experts(config)

    def __call__(self, x: mx.array) -> mx.array:
        """x: [N, D] -> [N, D] in x's dtype."""
        logits = x.astype(mx.float32) @ _dense_weight(self.router).astype(mx.float32).T
        logits = logits + self.router.bias.astype(mx.float32)
        expert_ids = mx.argsort(-logits, axis=-1)[:, :self.top_k]
        top_logits = mx.take_along_axis(logits, expert_ids, axis=-1)
        # HF divides the weights by k, casts the float32 sum, then multiplies by k; doing the same keeps
        # bfloat16 rounding identical to the reference (exact anyway when k is a power of two).
        routing_weights = mx.softmax(top_logits, axis=-1, precise=True) / self.top_k
        return self.experts(x, expert_ids, routing_weights).astype(x.dtype) * self.top_k


class Block(nn.Module):
    def __init__(self, config: ModelConfig, rotary: RotaryEmbedding, *,
                 block_size: int | None = None) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.self_attn = Attention(config, rotary, block_size=block_size)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = MoE(config)

    def __call__(self, x: mx.array, key_mask: mx.array, real_rows: mx.array | None) -> mx.array:
        """x: float32 residual [B, T, D]; real_rows: flat indices of real (non-padded) tokens, or None.

        The residual stream, norms, router and expert accumulation stay float32 whatever the weight dtype;
        only the matmul inputs are cast to it (as in the torch runtime).
        """
        x = x + self.self_attn(self.input_layernorm(x).astype(self.self_attn.compute_dtype), key_mask)
        h = self.post_attention_layernorm(x).reshape(-1, x.shape[-1])
        if real_rows is None:
            return x + self.mlp(h).reshape(x.shape)
        # Padded rows are discarded downstream, so the experts skip them.
        update = mx.zeros_like(h)
        update[real_rows] = self.mlp(h[real_rows])
        return x + update.reshape(x.shape)


class PrivacyFilterModel(nn.Module):
    """Token classifier: ``__call__(input_ids, attention_mask) -> float32 logits [B, T, num_labels]``."""

    def __init__(self, config: ModelConfig, *, block_size: int | None = None) -> None:
        super().__init__()
        self.config = config
        rotary = RotaryEmbedding(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = [Block(config, rotary, block_size=block_size) for _ in range(config.num_hidden_layers)]
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.score = nn.Linear(config.hidden_size, max(1, config.num_labels))

    def __call__(self, input_ids: mx.array, attention_mask: mx.array | None = None) -> mx.array:
        """input_ids: int [B, T] (right-padded); attention_mask: bool/0-1 [B, T]. Returns [B, T, C]."""
        if attention_mask is None:
            attention_mask = mx.ones(input_ids.shape, dtype=mx.bool_)
        key_mask = attention_mask.astype(mx.bool_)
        mask_host = np.array(key_mask).reshape(-1)  # MLX has no nonzero(); the mask is tiny, so read it back
        real_rows = None if mask_host.all() else mx.array(np.flatnonzero(mask_host).astype(np.int32))
        x = self.embed_tokens(input_ids).astype(mx.float32)
        for layer in self.layers:
            x = layer(x, key_mask, real_rows)
        # The head runs in float32 (it is small): bf16 logits would round away small margins.
        head = _dense_weight(self.score).astype(mx.float32)
        return self.norm(x) @ head.T + self.score.bias.astype(mx.float32)
