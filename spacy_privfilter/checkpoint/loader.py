"""Strict loading of checkpoint tensors into canonical HF naming, in two steps.

``plan_state_dict`` reads only the safetensors headers: it checks every tensor name, shape and dtype against
the config (all problems in one error) and says where each canonical tensor lies: a whole stored tensor, a
row range of a fused one, the parts of a quantized one, or a zero bias the file does not store.
``materialize`` turns that plan into tensors with a ``TensorReader``. This module holds the numpy reader;
each backend holds its own (torch reads through safetensors' memory map, MLX through ``mx.load``), so the
checkpoint package never imports a framework.

Canonical naming and semantics, whatever the file format (shapes for a config with D hidden, E experts,
I expert width, C labels; Linear weights are [out, in]):

    model.embed_tokens.weight [V, D]; model.norm.weight [D]; score.weight [C, D], score.bias [C]
    model.layers.{n}.input_layernorm.weight / post_attention_layernorm.weight [D]
    model.layers.{n}.self_attn.{q,k,v,o}_proj.weight / .bias
    model.layers.{n}.self_attn.sinks [H] float32, natural-log units
    model.layers.{n}.mlp.router.weight / .bias [E, D] / [E]
    model.layers.{n}.mlp.experts.gate_up_proj [E, D, 2I] and down_proj [E, I, D] ([E, in, out]), biases [E, out]

Quantized modules of MLX 8-bit artifacts are ``QuantizedWeight`` values (experts in MLX's transposed
[E, out, in] layout; a fused qkv is split by rows). A file without a classifier bias gets zeros.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Union

import numpy as np

from ..errors import CheckpointError
from .check import check_tensors
from .formats import (FLOAT_DTYPES, OPF_SINK_FACTOR, PACKED_DTYPE, canonical_shapes, mlx_file_shapes, opf_shapes,
                      opf_to_canonical, qkv_rows, stored_quantized)
from .safetensors_io import FileRegion, SafetensorsHeader, read_header, read_numpy
from .types import CheckpointInfo, QuantizedWeight


@dataclass(frozen=True)
class Stored:
    """A tensor in a weight file, or rows ``[rows[0], rows[1])`` of it (one block of a fused qkv)."""

    header: SafetensorsHeader
    name: str
    rows: tuple[int, int] | None = None
    sink_factor: float | None = None  # attention sinks: float32, values times this factor


@dataclass(frozen=True)
class StoredQuantized:
    weight: Stored
    scales: Stored
    biases: Stored
    bits: int
    group_size: int
    source: FileRegion | None = None


@dataclass(frozen=True)
class ZeroBias:
    """A bias the file does not store: zeros of ``shape`` in the dtype of tensor ``like``."""

    shape: tuple[int, ...]
    like: str


TensorPlan = Union[Stored, StoredQuantized, ZeroBias]


class TensorReader(Protocol):
    """The few operations loading needs from a framework."""

    def read(self, header: SafetensorsHeader, name: str) -> Any:
        """Tensor ``name`` of the file ``header`` describes, in its stored dtype."""

    def to_numpy_f32(self, tensor: Any) -> np.ndarray: ...

    def from_numpy(self, array: np.ndarray, like: Any = None) -> Any:
        """``array`` as a framework tensor (in ``like``'s dtype when given)."""


# -- planning (headers only) -------------------------------------------------------------------------------------
def locate(info: CheckpointInfo) -> dict[str, SafetensorsHeader]:
    """Tensor name -> the header of the weight file holding it (each tensor must be stored once)."""
    located: dict[str, SafetensorsHeader] = {}
    for path in info.weight_files:
        header = read_header(path)
        for name in header.tensors:
            if name in located:
                raise CheckpointError(f"tensor '{name}' appears in both '{located[name].path.name}' and "
                                      f"'{path.name}'; a checkpoint must store each tensor once")
            located[name] = header
    return located


def _expected_shapes(info: CheckpointInfo, present: set[str]) -> dict[str, tuple[int, ...]]:
    if info.format == "hf":
        return canonical_shapes(info.config)
    if info.format == "opf":
        return opf_shapes(info.config, score_bias="unembedding.bias" in present)
    return mlx_file_shapes(info.config, info.quantization, score_bias=info.config.classifier_bias,
                           quantized=stored_quantized(info.config, info.quantization, present))


def _check_headers(info: CheckpointInfo, located: Mapping[str, SafetensorsHeader]) -> None:
    classifier = "score.weight" if info.format == "hf" else "unembedding.weight"
    if classifier in located:
        rows = located[classifier].tensors[classifier].shape[0]
        if rows != info.config.num_labels:
            raise CheckpointError(
                f"label count mismatch: the classifier '{classifier}' has {rows} rows but id2label has "
                f"{info.config.num_labels} labels; the config.json/id2label.json does not belong to these weights")
    expected = _expected_shapes(info, set(located))
    packed = {name for name in expected if name.endswith(".weight") and name[:-7] + ".scales" in expected}
    files = ", ".join(p.name for p in info.weight_files)
    check_tensors(expected, {name: h.tensors[name].shape for name, h in located.items()},
                  dtypes={name: h.tensors[name].dtype for name, h in located.items()},
                  allowed_dtypes=lambda name: (PACKED_DTYPE,) if name in packed else FLOAT_DTYPES,
                  what=f"the {info.format} checkpoint weights in {files} do not match its config.json")


def plan_state_dict(info: CheckpointInfo) -> dict[str, TensorPlan]:
    """Canonical name -> where its data lies, after checking every stored tensor against the config."""
    located = locate(info)
    _check_headers(info, located)
    if info.format == "hf":
        return {name: Stored(header, name, sink_factor=1.0 if name.endswith(".sinks") else None)
                for name, header in located.items()}
    config, quant = info.config, info.quantization
    sink_factor = OPF_SINK_FACTOR if info.format == "opf" else 1.0
    q, kv, _ = qkv_rows(config)
    bounds = ((0, q), (q, q + kv), (q + kv, q + 2 * kv))
    plan: dict[str, TensorPlan] = {}
    quantized = stored_quantized(config, quant, set(located))
    for module in sorted(quantized):
        targets = opf_to_canonical(module + ".weight")
        assert targets is not None and quant is not None
        parts = [Stored(located[f"{module}.{p}"], f"{module}.{p}") for p in ("weight", "scales", "biases")]
        if len(targets) == 3:
            for target, rows in zip(targets, bounds):
                plan[target] = StoredQuantized(*(Stored(p.header, p.name, rows) for p in parts),
                                               bits=quant.bits, group_size=quant.group_size)
        else:
            plan[targets[0]] = StoredQuantized(*parts, bits=quant.bits, group_size=quant.group_size,
                                               source=parts[0].header.region(parts[0].name))
    for name, header in located.items():
        if name.rsplit(".", 1)[0] in quantized and not name.endswith(".bias"):
            continue
        targets = opf_to_canonical(name)
        assert targets is not None  # _check_headers rejected unknown names
        if len(targets) == 3:
            plan.update((target, Stored(header, name, rows)) for target, rows in zip(targets, bounds))
        else:
            sinks = targets[0].endswith("self_attn.sinks")
            plan[targets[0]] = Stored(header, name, sink_factor=sink_factor if sinks else None)
    if "score.bias" not in plan:
        plan["score.bias"] = ZeroBias((config.num_labels,), like="score.weight")
    return plan


# -- materializing -------------------------------------------------------------------------------------------------
def materialize(plan: Mapping[str, TensorPlan], reader: TensorReader) -> dict[str, Any]:
    """The tensors a plan describes, read with ``reader`` (each stored tensor read once)."""
    cache: dict[tuple[str, str], Any] = {}

    def read(item: Stored) -> Any:
        key = (str(item.header.path), item.name)
        if key not in cache:
            if len(cache) > 3:
                cache.clear()  # a fused tensor's blocks are read one after another; keep only the latest
            cache[key] = reader.read(item.header, item.name)
        tensor = cache[key]
        if item.rows is not None:
            tensor = tensor[item.rows[0]:item.rows[1]]
        if item.sink_factor is not None:
            sinks = reader.to_numpy_f32(tensor).astype(np.float64) * item.sink_factor
            tensor = reader.from_numpy(sinks.astype(np.float32))
        return tensor

    out: dict[str, Any] = {}
    for name, item in plan.items():
        if isinstance(item, Stored):
            out[name] = read(item)
        elif isinstance(item, StoredQuantized):
            out[name] = QuantizedWeight(read(item.weight), read(item.scales), read(item.biases), bits=item.bits,
                                        group_size=item.group_size, source=item.source)
    for name, item in plan.items():
        if isinstance(item, ZeroBias):
            like = out[item.like]
            like = like.scales if isinstance(like, QuantizedWeight) else like
            out[name] = reader.from_numpy(np.zeros(item.shape, dtype=np.float32), like)
    return out


class NumpyReader:
    """Reads with plain file reads; bfloat16 is upcast to float32 (numpy has no bfloat16)."""

    def read(self, header: SafetensorsHeader, name: str) -> np.ndarray:
        return read_numpy(header, name)

    def to_numpy_f32(self, tensor: Any) -> np.ndarray:
        return np.asarray(tensor, dtype=np.float32)

    def from_numpy(self, array: np.ndarray, like: Any = None) -> np.ndarray:
        return array


def read_with(info: CheckpointInfo, reader: TensorReader) -> dict[str, Any]:
    """The checkpoint's canonical tensors read by ``reader`` (a backend's), whatever the file format.

    safetensors layouts are planned from their headers and read tensor by tensor; a GGUF file is read as numpy
    by ``gguf.py`` and handed to the reader array by array.
    """
    if info.format == "gguf":
        from .gguf import load_gguf

        return {name: _from_numpy(value, reader) for name, value in load_gguf(info).items()}
    return materialize(plan_state_dict(info), reader)


def _from_numpy(value: Any, reader: TensorReader) -> Any:
    if isinstance(value, QuantizedWeight):
        return dataclasses.replace(value, weight=reader.from_numpy(value.weight),
                                   scales=reader.from_numpy(value.scales), biases=reader.from_numpy(value.biases))
    return reader.from_numpy(value)


def load_state_dict(info: CheckpointInfo) -> dict[str, Any]:
    """Read the checkpoint's tensors as numpy arrays (or QuantizedWeight of them) in canonical naming.

    Backends read framework tensors with ``read_with(info, their_reader)``.

    Raises:
        CheckpointError: missing/unexpected/mis-shaped/wrongly typed tensors (one error listing all), a label
            count that does not match id2label, or a truncated/corrupt weight file.
    """
    return read_with(info, NumpyReader())


__all__ = ["NumpyReader", "Stored", "StoredQuantized", "TensorPlan", "TensorReader", "ZeroBias", "load_state_dict", "read_with",
           "locate", "materialize", "plan_state_dict"]
