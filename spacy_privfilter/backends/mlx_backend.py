"""MLX runtime: any supported checkpoint (HF, opf, OpenMed MLX BF16/8-bit) -> ``MlxBackend``.

Loading follows mlx-lm: canonical tensors are renamed and cast to the model's parameter paths (sanitize),
``nn.quantize`` swaps in each quantized module's sibling class (``to_quantized``) exactly where the checkpoint
stores scales, and ``load_weights(strict=True)`` assigns every tensor. HF and opf checkpoints may be
quantized on load; MLX artifacts declare their own quantization (bits and group size from
``_mlx_quantization``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping, get_args

import numpy as np

from .._compat import require
from ..checkpoint.check import EXPERT_TENSORS, check_tensors, dense_shape
from ..checkpoint.formats import canonical_shapes
from ..checkpoint.loader import read_with
from ..checkpoint.safetensors_io import SafetensorsHeader
from ..checkpoint.types import CheckpointInfo, QuantizedWeight
from ..config import SUPPORTED_BITS, ModelConfig, QuantizationConfig
from ..errors import CheckpointError, ConfigError
from .base import DTYPES, DType

require("mlx", "backend='mlx'")

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402

from .mlx_model import PrivacyFilterModel  # noqa: E402

MlxDevice = Literal["auto", "cpu", "gpu", "mps"]
DEVICES: tuple[str, ...] = get_args(MlxDevice)
MX_DTYPES = {"auto": None, "float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}
# Sinks are float32 whatever the model dtype (the reference pins them). Norms, router and head are computed
# in float32 from their stored values, so an explicit dtype does not round them (torch keeps them too).
FLOAT32_SUFFIXES = (".self_attn.sinks",)
KEEP_STORED = ("layernorm.weight", "model.norm.weight", ".mlp.router.weight", ".mlp.router.bias",
               "score.weight", "score.bias")


class MlxReader:
    """Reads whole weight files with ``mx.load``, which handles bfloat16 natively (numpy has none)."""

    def __init__(self) -> None:
        self._files: dict[Path, Any] = {}

    def read(self, header: SafetensorsHeader, name: str) -> mx.array:
        if header.path not in self._files:
            try:
                self._files[header.path] = mx.load(str(header.path))
            except (RuntimeError, ValueError) as exc:
                raise CheckpointError(f"weight file '{header.path.name}' cannot be read by MLX "
                                      f"({type(exc).__name__}); the file is truncated or corrupt") from exc
        return self._files[header.path][name]

    def to_numpy_f32(self, tensor: mx.array) -> np.ndarray:
        return np.array(tensor.astype(mx.float32))

    def from_numpy(self, array: np.ndarray, like: mx.array | None = None) -> mx.array:
        out = mx.array(array)
        return out if like is None else out.astype(like.dtype)


def read_state_dict(info: CheckpointInfo) -> dict[str, Any]:
    """The checkpoint's canonical tensors as MLX arrays in their stored dtypes (QuantizedWeight parts too)."""
    return read_with(info, MlxReader())


class MlxBackend:
    """A loaded MLX model. ``logits`` returns float32 numpy arrays (batch, seq, num_labels)."""

    name = "mlx"

    def __init__(self, model: PrivacyFilterModel, *, device: Any, quantization: QuantizationConfig | None,
                 viterbi_biases: Mapping[str, float] | None = None, model_path: Path | None = None) -> None:
        self.model = model
        self.config: ModelConfig = model.config
        self.device = device
        self.quantization = quantization
        self.viterbi_biases = dict(viterbi_biases) if viterbi_biases else None
        self.model_path = model_path

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


def load(info: CheckpointInfo, *, device: str = "auto", dtype: DType = "auto",
         quantize: int | None = None) -> MlxBackend:
    """Load ``info`` into MLX.

    Args:
        info: the inspected checkpoint (any supported format).
        device: "auto" (MLX default), "cpu", or "gpu" ("mps" is accepted as an alias of "gpu").
        dtype: "auto" keeps the stored dtypes; "float32", "bfloat16" or "float16" casts floating weights
            (sinks stay float32).
        quantize: None, or one of ``SUPPORTED_BITS`` to quantize a dense checkpoint on load (affine, group
            size 64).
    """
    mx_device = resolve_device(device)
    _check_dtype(dtype)
    if quantize is not None and quantize not in SUPPORTED_BITS:
        raise ConfigError(f"quantize must be None or one of {SUPPORTED_BITS}; got {quantize!r}")
    quantization = info.quantization
    if quantize is not None and quantization is not None and quantization.bits != quantize:
        raise ConfigError(f"checkpoint {info.path.name!r} is already quantized to {quantization.bits} bits; "
                          f"cannot re-quantize to {quantize}. Fix: load the dense checkpoint, or drop "
                          "quantize")
    with mx.stream(mx_device):
        state_dict = read_state_dict(info)
        if quantize is not None and quantization is None:
            quantization = QuantizationConfig(bits=quantize)
            state_dict = quantize_state_dict(state_dict, quantization)
        model = build_model(state_dict, info.config, dtype=dtype, device=device)
        mx.eval(model.parameters())
    return MlxBackend(model, device=mx_device, quantization=quantization, viterbi_biases=info.viterbi_biases,
                      model_path=info.path)


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


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")


# -- quantization -------------------------------------------------------------------------------------
def quantizable_keys(state_dict: Mapping[str, Any]) -> list[str]:
    """Keys that OpenMed's 8-bit artifacts quantize: embedding, every linear weight, both expert tensors."""
    suffixes = ("_proj.weight", ".router.weight") + EXPERT_TENSORS
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
def _mx(value: Any) -> mx.array:
    return value if isinstance(value, mx.array) else mx.array(np.asarray(value))


def _cast(key: str, value: mx.array, dtype: mx.Dtype | None) -> mx.array:
    if key.endswith(FLOAT32_SUFFIXES):
        return value.astype(mx.float32)
    if dtype is None or key.endswith(KEEP_STORED) or not mx.issubdtype(value.dtype, mx.floating):
        return value
    return value.astype(dtype)


def sanitize(state_dict: Mapping[str, Any], dtype: mx.Dtype | None) -> tuple[dict[str, mx.array], dict[str, dict]]:
    """Canonical tensors -> (model parameter path -> array, quantized module path -> ``to_quantized`` options).

    Paths drop the leading ``model.``; an expert tensor ``experts.<proj>`` / ``experts.<proj>_bias`` becomes
    ``experts.<proj>.weight`` / ``.bias``. A quantized weight becomes ``<module>.weight``, ``.scales`` and
    ``.biases``.
    """
    weights: dict[str, mx.array] = {}
    quantized: dict[str, dict] = {}
    for key, value in state_dict.items():
        path = key[len("model."):] if key.startswith("model.") else key
        if key.endswith(EXPERT_TENSORS):
            path += ".weight"
        elif key.endswith(tuple(name + "_bias" for name in EXPERT_TENSORS)):
            path = path[:-len("_bias")] + ".bias"
        if not isinstance(value, QuantizedWeight):
            weights[path] = _cast(key, _mx(value), dtype)
            continue
        module = path[:-len(".weight")]
        weights[path] = _mx(value.weight)
        weights[module + ".scales"] = _cast(key, _mx(value.scales), dtype)
        weights[module + ".biases"] = _cast(key, _mx(value.biases), dtype)
        quantized[module] = {"group_size": value.group_size, "bits": value.bits, "mode": "affine"}
    return weights, quantized


def build_model(state_dict: Mapping[str, Any], config: ModelConfig, *, dtype: DType = "auto",
                device: str = "auto", block_size: int | None = None) -> PrivacyFilterModel:
    """A ``PrivacyFilterModel`` holding ``state_dict`` (canonical names; MLX or numpy arrays, QuantizedWeight).

    Every tensor is checked against ``config`` first (one error listing all problems); modules are quantized
    exactly where the state dict holds quantized weights.
    """
    _check_dtype(dtype)
    check_tensors(canonical_shapes(config), {key: dense_shape(key, value) for key, value in state_dict.items()},
                  what="state dict does not match the model config",
                  fix="check that config.json belongs to these weights (layers, sizes, labels)")
    with mx.stream(resolve_device(device)):
        weights, quantized = sanitize(state_dict, MX_DTYPES[dtype])
        model = PrivacyFilterModel(config, block_size=block_size)  # lazy: the template costs no memory
        nn.quantize(model, class_predicate=lambda path, module: quantized.get(path, False))
        try:
            model.load_weights(list(weights.items()), strict=True)
        except ValueError as exc:  # the checks above make this unreachable for a well-formed state dict
            raise CheckpointError(f"state dict does not fit the MLX model: {exc}") from exc
    return model
