"""The Privacy Filter encoder in PyTorch (the math is in docs/architecture.md §2).

Embedding -> L pre-norm blocks (banded bidirectional GQA attention with sinks and interleaved YaRN RoPE; sparse
top-k MoE with the clamped SwiGLU) -> final RMSNorm -> token classifier. Attribute names follow the canonical HF
checkpoint names (without the ``model.`` prefix) so weights load by name, and the MLX model (``mlx_model.py``)
mirrors this file class by class.

Attention never builds a T x T matrix: queries are cut into blocks that attend to the keys of their own block plus
``sliding_window`` tokens on each side, so time and memory grow linearly with length. The MoE runs each expert only
on the tokens routed to it (token-expert pairs sorted by expert).

Precision: the residual stream, norms, softmax, router, SwiGLU and classifier are float32 in every mode; with
bfloat16 weights the matmuls (experts included) run in bfloat16. On a margin-scaled test model the bf16 argmax
agrees with the float32 run on 99.70% of tokens (experts in float32: 99.65%; transformers bf16 eager 99.65%,
grouped_mm 99.60%), while float32 experts make a full-size layer 1.6x (512 tokens) to 1.9x (4,096 tokens) slower.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig

# Attention scores processed at once (float32 elements): cache-sized (faster than one pass), bounded memory.
_SCORE_ELEMENTS_PER_CHUNK = 1 << 18
# Token-expert pairs per run of experts in the MoE (a [512, 2I] float32 slab stays in cache).
_PAIRS_PER_CHUNK = 512
# Tokens per MoE call in inference: bounds the [tokens * k, D] expert inputs and the float32 buffers.
_MOE_TOKENS_PER_CHUNK = 2048


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in float32 (the scale is kept float32), cast back to the input dtype."""

    def __init__(self, hidden_size: int, *, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size, dtype=torch.float32), requires_grad=False)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        # x32 is a fresh tensor: without autograd it is scaled in place (the same products, one copy less).
        return (self.weight * x32 if torch.is_grad_enabled() else x32.mul_(self.weight)).to(x.dtype)


class RotaryEmbedding(nn.Module):
    """Interleaved-pair YaRN rotary embedding; the YaRN magnitude is folded into cos and sin."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d = config.head_dim
        base, factor = config.rope_theta, config.rope_factor
        # Built on the CPU explicitly (not as a buffer) so a model constructed on the meta device still has it.
        pos_freqs = base ** (torch.arange(0, d, 2, dtype=torch.float32, device="cpu") / d)
        inv_extrapolation = 1.0 / pos_freqs
        inv_interpolation = 1.0 / (factor * pos_freqs)
        low = _correction_dim(config.rope_beta_fast, d, base, config.rope_original_max_position_embeddings)
        high = _correction_dim(config.rope_beta_slow, d, base, config.rope_original_max_position_embeddings)
        if config.rope_truncate:
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, d - 1)
        if low == high:
            high += 0.001  # avoids a division by zero, as the reference does
        ramp = torch.clamp((torch.arange(d // 2, dtype=torch.float32, device="cpu") - low) / (high - low), 0, 1)
        extrapolation = 1 - ramp
        inv_freq = inv_interpolation * (1 - extrapolation) + inv_extrapolation * extrapolation
        self.inv_freq = inv_freq
        self._cached: tuple[tuple, tuple[torch.Tensor, torch.Tensor]] | None = None  # shared by all layers
        self.magnitude = 0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0

    def forward(self, seq_len: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape [seq_len, head_dim // 2] for positions 0..seq_len-1, in ``dtype``."""
        # Angles in float64: float32 pos * theta loses ~1e-3 rad by position 20k, so a windowed long document
        # (positions restart at 0) would disagree with the full run; short positions agree to float32 precision.
        key = (seq_len, dtype, device)
        if self._cached is None or self._cached[0] != key:
            positions = torch.arange(seq_len, dtype=torch.float64)
            freqs = positions[:, None] * self.inv_freq.double()
            cos, sin = freqs.cos() * self.magnitude, freqs.sin() * self.magnitude
            self._cached = key, (cos.to(device=device, dtype=dtype), sin.to(device=device, dtype=dtype))
        return self._cached[1]


def _correction_dim(rotations: float, dim: int, base: float, max_positions: int) -> float:
    return (dim * math.log(max_positions / (rotations * 2 * math.pi))) / (2 * math.log(base))


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[2i], x[2i+1]). x: [B, T, heads, d]; cos/sin: [T, d/2]."""
    cos, sin = cos[:, None, :], sin[:, None, :]
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((even * cos - odd * sin, odd * cos + even * sin), dim=-1).flatten(-2)


class Attention(nn.Module):
    """Banded bidirectional GQA attention with one learned sink logit per query head."""

    def __init__(self, config: ModelConfig, rotary: RotaryEmbedding, *, block_size: int | None = None) -> None:
        super().__init__()
        d, h, kv = config.head_dim, config.num_attention_heads, config.num_key_value_heads
        self.head_dim, self.num_heads, self.num_kv_heads = d, h, kv
        self.window = config.sliding_window
        # 64-query blocks: with a 128 window each score row spans 320 keys for a 257-wide band (measured
        # ~15% faster than 128-query blocks at 512 tokens; smaller blocks make the matmuls too small).
        self.block_size = block_size or 64
        self.q_proj = nn.Linear(config.hidden_size, h * d)
        self.k_proj = nn.Linear(config.hidden_size, kv * d)
        self.v_proj = nn.Linear(config.hidden_size, kv * d)
        self.o_proj = nn.Linear(h * d, config.hidden_size)
        self.sinks = nn.Parameter(torch.zeros(h, dtype=torch.float32), requires_grad=False)
        self.rotary = rotary
        self.scale = d ** -0.25  # applied to q and k separately, after RoPE (docs/architecture.md §2.2)
        # (q, k, v, key_mask) -> out, replacing _banded on bf16 CPU tensors when set (torch_native.py)
        self.native: Any = None

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """x: [B, T, D]; key_mask: bool [B, T] (False = padding). Returns [B, T, D]."""
        batch, seq, _ = x.shape
        d = self.head_dim
        q = self.q_proj(x).view(batch, seq, self.num_heads, d)
        k = self.k_proj(x).view(batch, seq, self.num_kv_heads, d)
        v = self.v_proj(x).view(batch, seq, self.num_kv_heads, d)
        cos, sin = self.rotary(seq, x.dtype, x.device)
        if self.native is not None and q.dtype == torch.bfloat16 and q.device.type == "cpu":
            out = self.native(self.native.rotate(q, cos, sin, self.scale), self.native.rotate(k, cos, sin, self.scale),
                              v, key_mask)
        else:
            q = apply_rotary(q, cos, sin) * self.scale
            k = apply_rotary(k, cos, sin) * self.scale
            out = self._banded(q, k, v, key_mask)
        return self.o_proj(out.reshape(batch, seq, self.num_heads * d))

    def _banded(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """Block-banded attention. q: [B, T, H, d]; k, v: [B, T, KV, d]; returns [B, T, H, d]."""
        batch, seq, _, d = q.shape
        kv, groups, w = self.num_kv_heads, self.num_heads // self.num_kv_heads, self.window
        block = min(self.block_size, seq)
        n_blocks = -(-seq // block)
        padded = n_blocks * block
        # Keys of block b span [b*block - pad, (b+1)*block + pad); pad never exceeds what other blocks hold.
        pad = min(w, padded - block)
        span = block + 2 * pad
        q = F.pad(q, (0, 0, 0, 0, 0, padded - seq))
        k = F.pad(k, (0, 0, 0, 0, pad, padded - seq + pad))
        v = F.pad(v, (0, 0, 0, 0, pad, padded - seq + pad))
        valid = F.pad(key_mask.bool(), (pad, padded - seq + pad), value=False)
        # [B, n_blocks, KV, G * block, d]: the G query heads sharing a KV head are stacked along the rows.
        q_blocks = (q.view(batch, n_blocks, block, kv, groups, d).permute(0, 1, 3, 4, 2, 5)
                    .reshape(batch, n_blocks, kv, groups * block, d))
        # Each block's keys and values plus one all-zero key/value, the sink: its score column is overwritten
        # with the sink logit, so one softmax covers [scores, sink], and its value row adds nothing.
        k_windows = k.new_zeros(batch, n_blocks, kv, d, span + 1)
        k_windows[..., :span] = k.unfold(1, span, block)
        v_windows = v.new_zeros(batch, n_blocks, kv, span + 1, d)
        v_windows[..., :span, :] = v.unfold(1, span, block).transpose(-1, -2)
        valid_windows = valid.unfold(1, span, block)            # [B, n_blocks, span]
        i = torch.arange(block, device=q.device)[:, None]
        j = torch.arange(span, device=q.device)[None, :]
        band = (i - j + pad).abs() <= w                         # [block, span]
        allowed = band[None, None, None, None] & valid_windows[:, :, None, None, None, :]
        mask_bias = torch.zeros(*allowed.shape[:-1], span + 1, dtype=torch.float32, device=q.device)
        mask_bias[..., :span].masked_fill_(~allowed, -math.inf)
        sinks = self.sinks.view(1, 1, kv, groups, 1, 1)
        out = torch.empty(batch, n_blocks, kv, groups * block, d, dtype=v.dtype, device=v.device)
        step = max(1, _SCORE_ELEMENTS_PER_CHUNK // max(1, batch * self.num_heads * block * span))
        for start in range(0, n_blocks, step):
            sl = slice(start, start + step)
            scores = torch.matmul(q_blocks[:, sl], k_windows[:, sl])
            scores = scores.view(batch, scores.shape[1], kv, groups, block, span + 1)
            # Adding the float32 0/-inf mask also upcasts the scores: one pass instead of two.
            scores = torch.add(scores, mask_bias[:, sl])
            scores[..., span:] = sinks
            probs = torch.softmax(scores, dim=-1).to(v.dtype).view(batch, -1, kv, groups * block, span + 1)
            out[:, sl] = torch.matmul(probs, v_windows[:, sl])
        out = (out.view(batch, n_blocks, kv, groups, block, d).permute(0, 1, 4, 2, 3, 5)
               .reshape(batch, padded, kv * groups, d))
        return out[:, :seq]


class Experts(nn.Module):
    """Per-expert clamped SwiGLU FFN; weights are [E, in, out] as in HF checkpoints (``y = x @ W[e] + b[e]``).

    ``compute_dtype`` is the matmul dtype: float32 reproduces HF eager (weights upcast per expert); bfloat16
    runs the matmuls on bf16 weights (faster on CPUs with bf16 instructions); SwiGLU is always float32.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        e, dim, inter = config.num_local_experts, config.hidden_size, config.intermediate_size
        self.num_experts, self.intermediate_size = e, inter
        self.gate_up_proj = nn.Parameter(torch.zeros(e, dim, 2 * inter), requires_grad=False)
        self.gate_up_proj_bias = nn.Parameter(torch.zeros(e, 2 * inter), requires_grad=False)
        self.down_proj = nn.Parameter(torch.zeros(e, inter, dim), requires_grad=False)
        self.down_proj_bias = nn.Parameter(torch.zeros(e, dim), requires_grad=False)
        self.alpha, self.limit = config.swiglu_alpha, config.swiglu_limit
        self.compute_dtype: torch.dtype | None = None  # None: the dtype of the stored weights
        self.row_multiple = 8  # each expert's rows are padded to a multiple of this (see _pad_groups)

    @classmethod
    def like(cls, other: "Experts") -> "Experts":
        """A ``cls`` with ``other``'s settings and biases but no weight matrices (subclasses add theirs)."""
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.num_experts, new.intermediate_size = other.num_experts, other.intermediate_size
        new.alpha, new.limit = other.alpha, other.limit
        new.compute_dtype, new.row_multiple = other.compute_dtype, other.row_multiple
        new.gate_up_proj_bias, new.down_proj_bias = other.gate_up_proj_bias, other.down_proj_bias
        return new

    def expert_weight(self, name: str, expert: int, dtype: torch.dtype) -> torch.Tensor:
        """Dense [in, out] weight of one expert in ``dtype`` (quantized subclasses dequantize here)."""
        return getattr(self, name)[expert].to(dtype)

    def swiglu(self, gate_up: torch.Tensor) -> torch.Tensor:
        """Clamped SwiGLU in float32 on concatenated [gate | up] halves (not interleaved); in-place ops
        keep the number of passes over the [pairs, 2I] buffer low."""
        half = self.intermediate_size
        gate = gate_up[:, :half].float().clamp_(max=self.limit)
        up = gate_up[:, half:].float().clamp_(min=-self.limit, max=self.limit).add_(1)
        return gate.mul_(torch.sigmoid(gate * self.alpha)).mul_(up)

    def forward(self, x: torch.Tensor, expert_ids: torch.Tensor, routing_weights: torch.Tensor) -> torch.Tensor:
        """x: [N, D]; expert_ids, routing_weights: [N, k]. Returns the weighted sum in float32 [N, D]."""
        n_tokens, top_k = expert_ids.shape
        dtype = self.compute_dtype or self.down_proj_bias.dtype
        flat = expert_ids.reshape(-1)
        order = torch.argsort(flat, stable=True)  # token-expert pairs grouped by expert, ascending id
        token_of_pair = order // top_k
        pair_weights = routing_weights.reshape(-1)[order].float()
        counts = torch.bincount(flat, minlength=self.num_experts)
        if self.row_multiple > 1:
            token_of_pair, pair_weights, counts = _pad_groups(flat[order], token_of_pair, pair_weights, counts,
                                                              self.row_multiple)
        counts = counts.tolist()
        # Cast, then gather: the k-times larger copy is in the small dtype. index_select, not x[idx]: measured
        # 11x faster for these row gathers on the CPU (0.15 vs 1.6 ms for 8,192 rows of 640 bf16).
        x_pairs = torch.index_select(x.to(dtype), 0, token_of_pair)
        out = torch.zeros(n_tokens, x.shape[1], dtype=torch.float32, device=x.device)
        # Runs of about _PAIRS_PER_CHUNK pairs: the float32 SwiGLU and weighting work on cache-sized slabs.
        for experts, start, stop in _expert_runs(counts, _PAIRS_PER_CHUNK):
            hidden = self._hidden(experts, counts, x_pairs[start:stop], dtype)
            self._combine(out, token_of_pair[start:stop], self._matmuls("down_proj", experts, counts, hidden, dtype),
                          pair_weights[start:stop])
        return out

    def _combine(self, out: torch.Tensor, tokens: torch.Tensor, y: torch.Tensor, weights: torch.Tensor) -> None:
        """out[tokens[p]] += y[p] * weights[p] in float32, pairs in order."""
        out.index_add_(0, tokens, y.float().mul_(weights[:, None]))

    def _hidden(self, experts: list[int], counts: list[int], rows: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """SwiGLU(rows @ gate_up[e] + b[e]) for each expert of a run, in ``dtype`` (the down projection's input)."""
        return self.swiglu(self._matmuls("gate_up_proj", experts, counts, rows, dtype)).to(dtype)

    def _matmuls(self, name: str, experts: list[int], counts: list[int], rows: torch.Tensor,
                 dtype: torch.dtype) -> torch.Tensor:
        """rows[of expert e] @ W[e] + b[e] for each expert of a run (rows grouped by expert), stacked."""
        out = torch.empty(rows.shape[0], getattr(self, name + "_bias").shape[-1], dtype=dtype, device=rows.device)
        start = 0
        for expert in experts:
            stop = start + counts[expert]
            self._project(name, expert, rows[start:stop], out[start:stop])
            start = stop
        return out

    def _project(self, name: str, expert: int, rows: torch.Tensor, out: torch.Tensor) -> None:
        """out = rows @ W[expert] + b[expert] in ``out``'s dtype (subclasses change how W is held)."""
        bias = getattr(self, name + "_bias")[expert].to(out.dtype)
        torch.addmm(bias, rows, self.expert_weight(name, expert, out.dtype), out=out)


def _pad_groups(expert_of_pair: torch.Tensor, token_of_pair: torch.Tensor, pair_weights: torch.Tensor,
                counts: torch.Tensor, multiple: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round every expert's group of rows up to a multiple of ``multiple``.

    Padding rows repeat token 0 with weight 0, so they add nothing. Fewer distinct row counts mean fewer
    oneDNN kernels: each new matmul shape is compiled once and cached with its buffers.
    """
    padded = (counts + multiple - 1) // multiple * multiple
    shift = (torch.cumsum(padded, 0) - padded) - (torch.cumsum(counts, 0) - counts)
    slot = torch.arange(expert_of_pair.shape[0], device=counts.device) + shift[expert_of_pair]
    total = int(padded.sum())
    tokens = torch.zeros(total, dtype=token_of_pair.dtype, device=counts.device)
    weights = torch.zeros(total, dtype=pair_weights.dtype, device=counts.device)
    tokens[slot], weights[slot] = token_of_pair, pair_weights
    return tokens, weights, padded


def _expert_runs(counts: list[int], target: int):
    """Yield (experts, first_pair, end_pair) for consecutive experts with tokens, ~``target`` pairs per run."""
    experts: list[int] = []
    start = stop = 0
    for expert, count in enumerate(counts):
        if count:
            experts.append(expert)
            stop += count
            if stop - start >= target:
                yield experts, start, stop
                experts, start = [], stop
    if experts:
        yield experts, start, stop


class MoE(nn.Module):
    """float32 top-k router (softmax over the selected logits) feeding the routed experts."""
    select = staticmethod(torch.topk)  # the router's top-k (the native runtime sets torch_native.NativeTopK)

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.router = nn.Linear(config.hidden_size, config.num_local_experts, dtype=torch.float32)
        self.experts = Experts(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, D] -> [N, D] in x's dtype."""
        logits = F.linear(x.float(), self.router.weight, self.router.bias)
        top_logits, expert_ids = self.select(logits, self.top_k, dim=-1)
        # The reference divides the weights by k and multiplies the sum by k again; kept for bit-level parity.
        routing_weights = torch.softmax(top_logits, dim=-1) / self.top_k
        return self.experts(x, expert_ids, routing_weights).to(x.dtype) * self.top_k


class Block(nn.Module):
    def __init__(self, config: ModelConfig, rotary: RotaryEmbedding, *, block_size: int | None = None) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.self_attn = Attention(config, rotary, block_size=block_size)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = MoE(config)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor, real_rows: torch.Tensor | None) -> torch.Tensor:
        """x: float32 residual [B, T, D]; real_rows: flat indices of non-padded tokens, or None without padding.

        The residual stream, norms, router and expert accumulation stay float32 whatever the weight dtype;
        only the matmul inputs are cast to it. (HF keeps a bfloat16 residual; float32 is as cheap here and
        agrees with the float32 model more often.) Without autograd, ``x`` is updated in place and returned.
        """
        if not torch.is_grad_enabled():
            return self._inference(x, key_mask, real_rows)
        x = x + self.self_attn(self.input_layernorm(x).to(self.self_attn.q_proj.weight.dtype), key_mask)
        h = self.post_attention_layernorm(x).view(-1, x.shape[-1])
        if real_rows is None:
            return x + self.mlp(h).view_as(x)
        # Padded rows are discarded downstream, so the experts skip them.
        update = torch.zeros_like(h)
        update.index_copy_(0, real_rows, self.mlp(torch.index_select(h, 0, real_rows)))
        return x + update.view_as(x)

    def _inference(self, x: torch.Tensor, key_mask: torch.Tensor, real_rows: torch.Tensor | None) -> torch.Tensor:
        """``forward`` with the residual added in place and the MoE run on chunks of tokens, so that only one
        chunk's expert activations are alive at once. Every step is row-wise: the same sums as ``forward``."""
        flat, step = x.view(-1, x.shape[-1]), _MOE_TOKENS_PER_CHUNK
        normed = torch.empty(flat.shape, dtype=self.self_attn.q_proj.weight.dtype, device=x.device)
        for start in range(0, flat.shape[0], step):  # no float32 temporaries of the whole input (32k: 84 MB each)
            normed[start:start + step] = self.input_layernorm(flat[start:start + step])
        x += self.self_attn(normed.view_as(x), key_mask)
        del normed
        count = flat.shape[0] if real_rows is None else real_rows.shape[0]
        for start in range(0, count, step):
            if real_rows is None:
                rows = flat[start:start + step]
                rows += self.mlp(self.post_attention_layernorm(rows))
            else:
                index = real_rows[start:start + step]
                flat.index_add_(0, index, self.mlp(self.post_attention_layernorm(torch.index_select(flat, 0, index))))
        return x


class PrivacyFilterModel(nn.Module):
    """Token classifier: ``forward(input_ids, attention_mask) -> float32 logits [B, T, num_labels]``."""

    def __init__(self, config: ModelConfig, *, block_size: int | None = None) -> None:
        super().__init__()
        self.config = config
        rotary = RotaryEmbedding(config)
        # An explicit (uninitialised) table skips nn.Embedding's random init: weights are always loaded, and
        # on the meta device that init alone costs ~67 MiB of resident memory (torch 2.13).
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size,
                                         _weight=torch.empty(config.vocab_size, config.hidden_size))
        self.layers = nn.ModuleList(Block(config, rotary, block_size=block_size)
                                    for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.score = nn.Linear(config.hidden_size, max(1, config.num_labels))
        self.requires_grad_(False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids: int64 [B, T] (right-padded); attention_mask: bool/0-1 [B, T]. Returns [B, T, C]."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
        key_mask = attention_mask.bool()
        real_rows = None if bool(key_mask.all()) else key_mask.reshape(-1).nonzero().squeeze(1)
        x = self.embed_tokens(input_ids).float()
        for layer in self.layers:
            x = layer(x, key_mask, real_rows)
        # The head is kept float32 (it is small): bf16 logits would round away small margins.
        return self.score(self.norm(x))
