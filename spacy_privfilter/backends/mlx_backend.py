"""MLX runtime: any supported checkpoint (HF, opf, OpenMed MLX BF16/8-bit) -> ``MlxBackend``.

HF and opf checkpoints arrive as canonical HF-named tensors and are converted in memory (optionally
quantized to 8-bit on load). MLX artifacts declare their own quantization: a module is quantized iff the
checkpoint holds its scales, with bits and group size from ``_mlx_quantization``. Loading is strict.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .._compat import require
from ..checkpoint.discover import CheckpointInfo, QuantizedWeight
from ..config import ModelConfig, QuantizationConfig
from ..errors import CheckpointError, ConfigError

require("mlx", "backend='mlx'")

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402

from .mlx_model import PrivacyFilterModel  # noqa: E402

DEVICES = ("auto", "cpu", "gpu", "mps")
DTYPES = {"auto": None, "float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}
QUANTIZE_BITS = (4, 8)
EXPERT_TENSORS = ("gate_up_proj", "down_proj")
# Sinks are float32 whatever the model dtype (the reference pins them). Norms, router and head are computed
# in float32 from their stored values, so an explicit dtype does not round them (torch keeps them too).
FLOAT32_SUFFIXES = (".self_attn.sinks",)
KEEP_STORED = ("layernorm.weight", "model.norm.weight", ".mlp.router.weight", ".mlp.router.bias",
               "score.weight", "score.bias")
_MAX_LISTED = 12


class MlxBackend:
    """A loaded MLX model. ``logits`` returns float32 numpy arrays (batch, seq, num_labels)."""

    name = "mlx"

    def __init__(self, model: PrivacyFilterModel, *, device: Any, quantization: QuantizationConfig | None,
                 viterbi_biases: Mapping[str, float] | None = None) -> None:
        self.model = model
        self.config: ModelConfig = model.config
        self.device = device
        self.quantization = quantization
        self.viterbi_biases = dict(viterbi_biases) if viterbi_biases else None

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        input_ids = np.asarray(input_ids)
        attention_mask = np.asarray(attention_mask)
        if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
            raise ConfigError(f"input_ids and attention_mask must both be (batch, seq); got shapes "
                              f"{input_ids.shape} and {attention_mask.shape}")
        batch, seq = input_ids.shape
        if batch == 0 or seq == 0:
            return np.zeros((batch, seq, self.config.num_labels), dtype=np.float32)
        if input_ids.min() < 0 or input_ids.max() >= self.config.vocab_size:
            raise ConfigError(f"token ids must lie in [0, {self.config.vocab_size}); got ids in "
                              f"[{int(input_ids.min())}, {int(input_ids.max())}]")
        with mx.stream(self.device):
            logits = self.model(mx.array(input_ids.astype(np.int32)), mx.array(attention_mask.astype(bool)))
            logits = logits.astype(mx.float32)
            mx.eval(logits)
        return np.array(logits, copy=True)


def load(info: CheckpointInfo, *, device: str = "auto", dtype: str = "auto",
         quantize: int | None = None) -> MlxBackend:
    """Load ``info`` into MLX.

    Args:
        info: the inspected checkpoint (any supported format).
        device: "auto" (MLX default), "cpu", or "gpu" ("mps" is accepted as an alias of "gpu").
        dtype: "auto" keeps the stored dtypes; "float32", "bfloat16" or "float16" casts floating weights
            (sinks stay float32).
        quantize: None, or 8 (or 4) to quantize a dense checkpoint on load (affine, group size 64).
    """
    from ..checkpoint.discover import load_state_dict

    mx_device = resolve_device(device)
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    if quantize is not None and quantize not in QUANTIZE_BITS:
        raise ConfigError(f"quantize must be None or one of {QUANTIZE_BITS}; got {quantize!r}")
    quantization = info.quantization
    if quantize is not None and quantization is not None and quantization.bits != quantize:
        raise ConfigError(f"checkpoint {info.path.name!r} is already quantized to {quantization.bits} bits; "
                          f"cannot re-quantize to {quantize}. Fix: load the dense checkpoint, or drop "
                          "quantize")
    with mx.stream(mx_device):
        state_dict = load_state_dict(info, framework="mlx")
        if quantize is not None and quantization is None:
            quantization = QuantizationConfig(bits=quantize)
            state_dict = quantize_state_dict(state_dict, quantization)
        model = build_model(info.config, state_dict, dtype=dtype)
        mx.eval(model.parameters())
    return MlxBackend(model, device=mx_device, quantization=quantization, viterbi_biases=info.viterbi_biases)


def resolve_device(device: str) -> Any:
    if device not in DEVICES:
        raise ConfigError(f"device for the MLX backend must be one of {', '.join(DEVICES)}; got {device!r}")
    if device == "auto":
        return mx.default_device()
    if device == "cpu":
        return mx.cpu
    if not mx.is_available(mx.gpu):
        raise ConfigError(f"device={device!r} was requested but MLX has no GPU here. Fix: use device='cpu'")
    return mx.gpu


# -- quantization -------------------------------------------------------------------------------------
def quantizable_keys(state_dict: Mapping[str, Any]) -> list[str]:
    """Keys that OpenMed's 8-bit artifacts quantize: embedding, every linear weight, both expert tensors."""
    suffixes = ("_proj.weight", ".router.weight") + tuple(f".experts.{name}" for name in EXPERT_TENSORS)
    return [key for key in state_dict
            if key in ("model.embed_tokens.weight", "score.weight") or key.endswith(suffixes)]


def quantize_state_dict(state_dict: Mapping[str, Any], quantization: QuantizationConfig) -> dict[str, Any]:
    """Affine-quantize the quantizable dense tensors with ``mx.quantize``.

    Expert tensors are transposed to ``[E, out, in]`` first, the layout ``gather_qmm(transpose=True)`` reads.
    """
    out = dict(state_dict)
    for key in quantizable_keys(state_dict):
        value = state_dict[key]
        if isinstance(value, QuantizedWeight):
            continue
        if key.endswith(EXPERT_TENSORS):
            value = mx.swapaxes(value, -1, -2)
        if value.shape[-1] % quantization.group_size:
            raise ConfigError(f"cannot quantize {key}: its input width {value.shape[-1]} is not a multiple "
                              f"of group_size {quantization.group_size}")
        weight, scales, biases = mx.quantize(value, group_size=quantization.group_size,
                                             bits=quantization.bits, mode=quantization.mode)
        out[key] = QuantizedWeight(weight=weight, scales=scales, biases=biases, bits=quantization.bits,
                                   group_size=quantization.group_size)
    return out


# -- strict loading -----------------------------------------------------------------------------------
def module_path(key: str) -> str:
    """Canonical HF key -> parameter path in ``PrivacyFilterModel`` (drops the ``model.`` prefix)."""
    return key[len("model."):] if key.startswith("model.") else key


def logical_shape(key: str, value: Any) -> tuple[int, ...]:
    """The dense shape a stored tensor stands for (quantized experts are stored transposed)."""
    if not isinstance(value, QuantizedWeight):
        return tuple(value.shape)
    *lead, rows, packed = value.weight.shape
    shape = (*lead, rows, packed * 32 // value.bits)
    if key.endswith(EXPERT_TENSORS):
        shape = (*shape[:-2], shape[-1], shape[-2])
    return tuple(shape)


def check_state_dict(expected: Mapping[str, tuple[int, ...]], state_dict: Mapping[str, Any]) -> None:
    """Raise CheckpointError listing missing, unexpected and mis-shaped keys."""
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    misshaped = [f"{key}: expected {expected[key]}, got {logical_shape(key, state_dict[key])}"
                 for key in sorted(set(expected) & set(state_dict))
                 if logical_shape(key, state_dict[key]) != expected[key]]
    problems = []
    for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if items:
            shown = ", ".join(items[:_MAX_LISTED]) + (f", ... ({len(items) - _MAX_LISTED} more)"
                                                      if len(items) > _MAX_LISTED else "")
            problems.append(f"{len(items)} {title} key(s): {shown}")
    if problems:
        raise CheckpointError("checkpoint does not match its config.json for the MLX model: "
                              + "; ".join(problems)
                              + ". Fix: check that config.json belongs to these weights "
                              "(layers, sizes, labels)")


def _cast(key: str, value: mx.array, dtype: mx.Dtype | None) -> mx.array:
    if key.endswith(FLOAT32_SUFFIXES):
        return value.astype(mx.float32)
    if dtype is None or key.endswith(KEEP_STORED) or not mx.issubdtype(value.dtype, mx.floating):
        return value
    return value.astype(dtype)


def _parent(model: nn.Module, path: str) -> tuple[Any, str]:
    *parts, name = path.split(".")
    node: Any = model
    for part in parts:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node, name


def build_model(config: ModelConfig, state_dict: Mapping[str, Any], *,
                dtype: str = "auto") -> PrivacyFilterModel:
    """Instantiate ``PrivacyFilterModel`` and assign every tensor strictly, swapping in quantized modules."""
    target = DTYPES[dtype]
    model = PrivacyFilterModel(config)  # MLX arrays are lazy: the template costs no memory until evaluated
    expected = {("score." + p[len("score."):] if p.startswith("score.") else "model." + p): tuple(v.shape)
                for p, v in tree_flatten(model.parameters())}
    check_state_dict(expected, state_dict)
    for key, value in state_dict.items():
        parent, name = _parent(model, module_path(key))
        if not isinstance(value, QuantizedWeight):
            setattr(parent, name, _cast(key, value, target))
            continue
        quant = QuantizationConfig(bits=value.bits, group_size=value.group_size)
        scales, biases = _cast(key, value.scales, target), _cast(key, value.biases, target)
        if name in EXPERT_TENSORS:
            parent[name] = {"weight": value.weight, "scales": scales, "biases": biases}
            setattr(parent, f"{name}_quantization", quant)
            continue
        owner, attr = _parent(model, module_path(key).rsplit(".", 1)[0])
        dense = parent
        if isinstance(dense, nn.Embedding):
            rows, cols = dense.weight.shape
            layer: nn.Module = nn.QuantizedEmbedding(rows, cols, group_size=quant.group_size, bits=quant.bits)
        else:
            out_dims, in_dims = dense.weight.shape
            layer = nn.QuantizedLinear(in_dims, out_dims, bias=True, group_size=quant.group_size,
                                       bits=quant.bits)
            layer.bias = dense.bias
        layer.weight, layer.scales, layer.biases = value.weight, scales, biases
        if isinstance(owner, list):
            owner[int(attr)] = layer
        else:
            setattr(owner, attr, layer)
    return model
