"""Write a canonical state dict as an HF, opf or OpenMed MLX (BF16 / affine 8-bit) checkpoint folder.

Tensors are produced and written one at a time (see ``safetensors_io.write_safetensors``), so a lazily computed
state dict of the full-size model is written without holding the whole model in memory.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping, get_args

import numpy as np

from ..config import ModelConfig, QuantizationConfig
from ..errors import CheckpointError, ConfigError
from .affine import QuantDtype, dequantize, quantize, to_bfloat16_bits
from .check import check_tensors
from .config_json import config_dict
from .formats import (OPF_SINK_FACTOR, canonical_shapes, is_transposed_expert, mlx_file_shapes, mlx_manifest,
                      opf_shapes, opf_to_canonical, quantized_modules)
from .safetensors_io import PendingTensor, write_safetensors
from .types import SAVE_FORMATS, QuantizedWeight, SaveFormat

DTYPE_CODES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}
DTYPE_NAMES = {code: name for name, code in DTYPE_CODES.items()}
EXPERT_CHUNK = 16  # experts quantized per step, bounding temporary memory for the full-size model


def _encode(values: np.ndarray, code: str) -> np.ndarray:
    if code == "BF16":
        return to_bfloat16_bits(values)
    return np.asarray(values, dtype=np.float16 if code == "F16" else np.float32)


class _Source:
    """Reads canonical numpy tensors (dense or QuantizedWeight) as float32 numpy."""

    def __init__(self, state_dict: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]]) -> None:
        self.state_dict, self.shapes = state_dict, shapes

    def has(self, name: str) -> bool:
        return name in self.state_dict

    def code(self, name: str, value: Any = None) -> str:
        value = self.state_dict[name] if value is None else value
        dtype = str(getattr(value.scales if isinstance(value, QuantizedWeight) else value, "dtype", "float32"))
        dtype = dtype.rsplit(".", 1)[-1]
        return "BF16" if dtype == "bfloat16" else "F16" if dtype == "float16" else "F32"

    def dense(self, name: str, value: Any = None) -> np.ndarray:
        value = self.state_dict[name] if value is None else value
        if isinstance(value, QuantizedWeight):
            code = self.code(name, value)
            dense = dequantize(_numpy(value.weight, raw=True), _numpy(value.scales), _numpy(value.biases),
                               bits=value.bits, group_size=value.group_size,
                               dtype="bfloat16" if code == "BF16" else "float32")
            if name.endswith(("gate_up_proj", "down_proj")):
                dense = np.swapaxes(dense, -1, -2)  # stored transposed ([E, out, in])
        else:
            dense = _numpy(value)
        check_tensors({name: self.shapes[name]}, {name: dense.shape}, what="state dict does not match the config")
        return dense


def _numpy(value: Any, *, raw: bool = False) -> np.ndarray:
    """A state dict value as numpy: float32 for floating types, unchanged integers when ``raw``."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"save_checkpoint needs numpy arrays; got a {type(value).__name__} numpy cannot read "
            f"({type(exc).__name__}). Fix: convert framework tensors first (torch: t.float().numpy())") from exc
    if array.dtype == object:
        raise CheckpointError(f"save_checkpoint needs numpy arrays; got a {type(value).__name__}")
    return array if raw or not np.issubdtype(array.dtype, np.floating) else array.astype(np.float32, copy=False)


def save_checkpoint(state_dict: Mapping[str, Any], config: ModelConfig, dst: str | Path, *,
                    format: SaveFormat = "hf", dtype: QuantDtype | None = None,
                    source_model_id: str | None = None) -> Path:
    """Write ``state_dict`` (canonical names, numpy values) as a ``format`` checkpoint folder.

    Args:
        state_dict: canonical tensors (see ``loader.py``) as numpy arrays or QuantizedWeight of numpy arrays;
            values are read one at a time, so a lazily computed mapping works.
        config: the architecture; its id2label is written with the weights.
        dst: folder to create or overwrite files in.
        format: one of ``SAVE_FORMATS``.
        dtype: None keeps the embedding's dtype for every tensor; "float32" or "bfloat16" casts (sinks, and
            MLX norms, stay float32).
        source_model_id: recorded in the OpenMed manifest of MLX artifacts.

    Returns:
        The checkpoint folder.
    """
    if format not in SAVE_FORMATS:
        raise ConfigError(f"format must be one of {', '.join(SAVE_FORMATS)}; got {format!r}")
    if dtype is not None and dtype not in get_args(QuantDtype):
        raise ConfigError(f"dtype must be None or one of {', '.join(get_args(QuantDtype))}; got {dtype!r}")
    if config.num_labels == 0:
        raise ConfigError("config.id2label is empty; a checkpoint needs its label names")
    shapes = canonical_shapes(config)
    # Shapes are checked as each tensor is produced: a lazy state dict computes a value only when it is read.
    check_tensors(shapes, dict.fromkeys(state_dict), optional={"score.bias"},
                  what="state dict does not match the config")
    source = _Source(state_dict, shapes)
    code = DTYPE_CODES[dtype] if dtype else source.code("model.embed_tokens.weight")
    config = config.with_updates(dtype=DTYPE_NAMES[code])
    folder = Path(dst)
    folder.mkdir(parents=True, exist_ok=True)
    if format == "hf":
        tensors = [_pending(name, "F32" if name.endswith("sinks") else code, shapes[name], _canonical(source, name))
                   for name in shapes]
        write_safetensors(folder / "model.safetensors", tensors, {"format": "pt"})
        _write_json(folder / "config.json", config_dict(config, "hf"))
        return folder
    if format == "opf":
        bias = source.has("score.bias") and bool(np.any(source.dense("score.bias")))
        tensors = [_pending(name, "F32" if name.endswith("sinks") else code, shape,
                            _opf_tensor(source, name, sink_factor=1.0 / OPF_SINK_FACTOR))
                   for name, shape in opf_shapes(config, score_bias=bias).items()]
        write_safetensors(folder / "model.safetensors", tensors, {"format": "pt"})
        _write_json(folder / "config.json", config_dict(config.with_updates(classifier_bias=bias), "opf"))
        return folder
    quant = QuantizationConfig(bits=8, group_size=64) if format == "mlx-8bit" else None
    tensors = _mlx_tensors(source, config, quant, code)
    write_safetensors(folder / "weights.safetensors", tensors,
                      {"format": "mlx", "openmed_task": "token-classification"})
    _write_json(folder / "config.json", config_dict(config, "mlx", quantization=quant))
    _write_json(folder / "id2label.json", {str(i): label for i, label in enumerate(config.id2label)})
    _write_json(folder / "openmed-mlx.json", mlx_manifest(config, quant, source_model_id=source_model_id))
    return folder


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _pending(name: str, code: str, shape: tuple[int, ...], produce: Callable[[], np.ndarray]) -> PendingTensor:
    return PendingTensor(name, code, tuple(shape), lambda: _encode(produce(), code))


def _canonical(source: _Source, name: str) -> Callable[[], np.ndarray]:
    if name == "score.bias" and not source.has(name):
        return lambda: np.zeros(source.shapes[name], dtype=np.float32)
    return lambda: source.dense(name)


def _opf_tensor(source: _Source, name: str, *, sink_factor: float) -> Callable[[], np.ndarray]:
    targets = opf_to_canonical(name)
    assert targets is not None
    if len(targets) == 3:
        return lambda: np.concatenate([source.dense(t) for t in targets], axis=0)
    if targets[0].endswith("sinks"):
        return lambda: (source.dense(targets[0]).astype(np.float64) * sink_factor).astype(np.float32)
    return _canonical(source, targets[0])


def _mlx_tensors(source: _Source, config: ModelConfig, quant: QuantizationConfig | None,
                 code: str) -> list[PendingTensor]:
    shapes = mlx_file_shapes(config, quant, score_bias=config.classifier_bias)
    modules = set(quantized_modules(config)) if quant is not None else set()
    cache: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def part(module: str, index: int) -> np.ndarray:
        if module not in cache:
            cache.clear()  # parts are written consecutively; keep one module at a time
            cache[module] = _quantize_module(source, module, quant, code)
        return cache[module][index]

    tensors = []
    for name, shape in shapes.items():
        module, leaf = name.rsplit(".", 1)
        if module in modules and leaf in ("weight", "scales", "biases"):
            index = ("weight", "scales", "biases").index(leaf)
            tensors.append(PendingTensor(name, "U32" if index == 0 else code, shape,
                                         lambda m=module, i=index: part(m, i) if i == 0 else _encode(part(m, i), code)))
            continue
        norm = name.endswith("norm.scale") or name == "norm.scale"
        stored = "F32" if norm or name.endswith("sinks") else code
        tensors.append(_pending(name, stored, shape, _opf_tensor(source, name, sink_factor=1.0)))
    return tensors


def _quantize_module(source: _Source, module: str, quant: QuantizationConfig,
                     code: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    targets = opf_to_canonical(module + ".weight")
    assert targets is not None
    given = [source.state_dict[t] for t in targets]  # fetched once: a lazy state dict computes on access
    if all(isinstance(q, QuantizedWeight) and q.bits == quant.bits and q.group_size == quant.group_size
           for q in given):
        # Already quantized the same way: copy codes, scales and biases (re-quantizing would not be lossless).
        return tuple(np.concatenate([_numpy(getattr(q, f), raw=(f == "weight")) for q in given], axis=0)
                     for f in ("weight", "scales", "biases"))  # type: ignore[return-value]
    dense = np.concatenate([source.dense(t, v) for t, v in zip(targets, given)], axis=0)
    mode = "bfloat16" if code == "BF16" else "float32"
    if not is_transposed_expert(module):
        return quantize(dense, bits=quant.bits, group_size=quant.group_size, dtype=mode)
    pieces = [quantize(np.swapaxes(dense[i:i + EXPERT_CHUNK], 1, 2), bits=quant.bits,
                       group_size=quant.group_size, dtype=mode) for i in range(0, dense.shape[0], EXPERT_CHUNK)]
    return tuple(np.concatenate([p[k] for p in pieces], axis=0) for k in range(3))  # type: ignore[return-value]


__all__ = ["save_checkpoint"]
