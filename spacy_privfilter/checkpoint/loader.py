"""Strict loading of checkpoint tensors into canonical HF naming for torch, MLX or numpy.

Every tensor name and shape is checked against the config from the safetensors headers alone, before any tensor
data is read, and all problems are reported in one error.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .._compat import require
from .discover import CheckpointInfo, QuantizedWeight
from ..errors import CheckpointError, ConfigError
from .formats import (canonical_shapes, mlx_file_shapes, opf_shapes, opf_to_canonical, qkv_rows,
                      stored_quantized)
from .safetensors_io import SafetensorsHeader, read_header, read_numpy

FRAMEWORKS = ("pt", "mlx", "numpy")
FLOAT_DTYPES = ("F32", "BF16", "F16")
LN2 = math.log(2.0)


# -- strict key checks -------------------------------------------------------------------------------------------
def _listing(items: list[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def _expected_shapes(info: CheckpointInfo, present: set[str]) -> dict[str, tuple[int, ...]]:
    if info.format == "hf":
        return canonical_shapes(info.config)
    if info.format == "opf":
        return opf_shapes(info.config, score_bias="unembedding.bias" in present)
    return mlx_file_shapes(info.config, info.quantization, score_bias=info.config.classifier_bias,
                           quantized=stored_quantized(info.config, info.quantization, present))


def _check_tensors(info: CheckpointInfo, located: Mapping[str, SafetensorsHeader]) -> None:
    classifier = "score.weight" if info.format == "hf" else "unembedding.weight"
    if classifier in located:
        rows = located[classifier].tensors[classifier].shape[0]
        if rows != info.config.num_labels:
            raise CheckpointError(
                f"label count mismatch: the classifier '{classifier}' has {rows} rows but id2label has "
                f"{info.config.num_labels} labels; the config.json/id2label.json does not belong to these weights")
    expected = _expected_shapes(info, set(located))
    missing = sorted(set(expected) - set(located))
    unexpected = sorted(set(located) - set(expected))
    misshaped = sorted(f"{name} {list(located[name].tensors[name].shape)} (expected {list(expected[name])})"
                       for name in set(expected) & set(located)
                       if tuple(located[name].tensors[name].shape) != tuple(expected[name]))
    packed = {name for name in expected if name.endswith(".weight") and name[:-7] + ".scales" in expected}
    mistyped = []
    for name in sorted(set(expected) & set(located)):
        dtype, allowed = located[name].tensors[name].dtype, ("U32",) if name in packed else FLOAT_DTYPES
        if dtype not in allowed:
            mistyped.append(f"{name} {dtype} (expected {' or '.join(allowed)})")
    if missing or unexpected or misshaped or mistyped:
        parts = [f"{len(missing)} missing: {_listing(missing)}" if missing else "",
                 f"{len(unexpected)} unexpected: {_listing(unexpected)}" if unexpected else "",
                 f"{len(misshaped)} mis-shaped: {_listing(misshaped)}" if misshaped else "",
                 f"{len(mistyped)} of the wrong dtype: {_listing(mistyped)}" if mistyped else ""]
        files = ", ".join(p.name for p in info.weight_files)
        raise CheckpointError(
            f"the {info.format} checkpoint weights in {files} do not match its config.json: "
            + "; ".join(p for p in parts if p))


# -- framework readers ---------------------------------------------------------------------------------------------
class _Reader:
    """Reads named tensors from the weight files with one framework, plus the few conversions loading needs."""

    def __init__(self, framework: str, located: Mapping[str, SafetensorsHeader]) -> None:
        self.framework = framework
        self.located = located
        self._handles: dict[Path, Any] = {}

    def get(self, name: str) -> Any:
        header = self.located[name]
        if self.framework == "numpy":
            return read_numpy(header, name)
        if self.framework == "mlx":
            return self._mlx_file(header)[name]
        from safetensors import SafetensorError, safe_open

        try:
            if header.path not in self._handles:
                self._handles[header.path] = safe_open(str(header.path), framework=self.framework)
            return self._handles[header.path].get_tensor(name)
        except SafetensorError as exc:
            raise CheckpointError(f"weight file '{header.path.name}': cannot read tensor '{name}' "
                                  f"({type(exc).__name__}); the file is truncated or corrupt") from exc

    def _mlx_file(self, header: SafetensorsHeader) -> Any:
        # safetensors' own MLX path goes through numpy, which has no bfloat16; MLX's loader reads it natively.
        if header.path not in self._handles:
            import mlx.core as mx
            try:
                self._handles[header.path] = mx.load(str(header.path))
            except (RuntimeError, ValueError) as exc:
                raise CheckpointError(f"weight file '{header.path.name}' cannot be read by MLX "
                                      f"({type(exc).__name__}); the file is truncated or corrupt") from exc
        return self._handles[header.path]

    def to_numpy_f32(self, tensor: Any) -> np.ndarray:
        if self.framework == "pt":
            return tensor.float().numpy()
        if self.framework == "mlx":
            import mlx.core as mx
            return np.array(tensor.astype(mx.float32))
        return np.asarray(tensor, dtype=np.float32)

    def from_numpy(self, array: np.ndarray, like: Any = None) -> Any:
        if self.framework == "pt":
            import torch
            out = torch.from_numpy(np.ascontiguousarray(array))
            return out if like is None else out.to(like.dtype)
        if self.framework == "mlx":
            import mlx.core as mx
            out = mx.array(array)
            return out if like is None else out.astype(like.dtype)
        return array


def load(info: CheckpointInfo, *, framework: str = "pt") -> dict[str, Any]:
    """Read the checkpoint's tensors in canonical HF naming and semantics (see the module contract)."""
    if framework not in FRAMEWORKS:
        raise ConfigError(f"framework must be one of {', '.join(FRAMEWORKS)}; got {framework!r}")
    if framework == "pt":
        require("torch", "load_state_dict(framework='pt')")
    elif framework == "mlx":
        require("mlx", "load_state_dict(framework='mlx')")
    located: dict[str, SafetensorsHeader] = {}
    for path in info.weight_files:
        header = read_header(path)
        for name in header.tensors:
            if name in located:
                raise CheckpointError(f"tensor '{name}' appears in both '{located[name].path.name}' and "
                                      f"'{path.name}'; a checkpoint must store each tensor once")
            located[name] = header
    _check_tensors(info, located)
    reader = _Reader(framework, located)
    if info.format == "hf":
        out = {name: reader.get(name) for name in located}
        for n in range(info.config.num_hidden_layers):
            key = f"model.layers.{n}.self_attn.sinks"
            out[key] = reader.from_numpy(reader.to_numpy_f32(out[key]))
        return out
    return _load_opf_layout(info, reader)


def _load_opf_layout(info: CheckpointInfo, reader: _Reader) -> dict[str, Any]:
    config, quant = info.config, info.quantization
    sink_factor = LN2 if info.format == "opf" else 1.0  # opf stores log2-unit sinks; MLX artifacts come from HF
    q, kv, _ = qkv_rows(config)
    bounds = ((0, q), (q, q + kv), (q + kv, q + 2 * kv))
    out: dict[str, Any] = {}
    quantized = stored_quantized(config, quant, set(reader.located))
    for module in sorted(quantized):
        targets = opf_to_canonical(module + ".weight")
        assert targets is not None
        parts = [reader.get(f"{module}.{part}") for part in ("weight", "scales", "biases")]
        if len(targets) == 3:
            for target, (a, b) in zip(targets, bounds):
                out[target] = QuantizedWeight(*(p[a:b] for p in parts), bits=quant.bits, group_size=quant.group_size)
        else:
            codes = f"{module}.weight"
            out[targets[0]] = QuantizedWeight(*parts, bits=quant.bits, group_size=quant.group_size,
                                              source=reader.located[codes].region(codes))
    for name in reader.located:
        module = name.rsplit(".", 1)[0]
        if module in quantized and not name.endswith(".bias"):
            continue
        targets = opf_to_canonical(name)
        assert targets is not None  # _check_tensors rejected unknown names
        tensor = reader.get(name)
        if len(targets) == 3:
            for target, (a, b) in zip(targets, bounds):
                out[target] = tensor[a:b]
        elif targets[0].endswith("self_attn.sinks"):
            sinks = reader.to_numpy_f32(tensor).astype(np.float64) * sink_factor
            out[targets[0]] = reader.from_numpy(sinks.astype(np.float32))
        else:
            out[targets[0]] = tensor
    if "score.bias" not in out:
        score = out["score.weight"]
        like = score.scales if isinstance(score, QuantizedWeight) else score
        out["score.bias"] = reader.from_numpy(np.zeros(config.num_labels, dtype=np.float32), like)
    return out
