"""Read the ggml port's GGUF checkpoints (base, multilingual, Nemotron; F32, F16, BF16 and Q8_0 tensors).

The ``gguf`` package parses the file (a memory map; no ggml runtime). Names and metadata keys come from the
tables in ``gguf_names.py``; labels come from ``classifier.output_labels``, so any label set loads unchanged.
Q8_0 expert matrices stay 8-bit: a Q8_0 block (one fp16 scale ``d``, 32 int8 codes ``q``, value ``d * q``)
is exactly an affine group of 32 with scale ``d``, codes ``q + 128`` and offset ``-128 d``, which the
backends' 8-bit path runs as it runs MLX artifacts. Q8_0 tensors elsewhere are dequantized at load.
GGUF files carry no Viterbi calibration; a ``viterbi_calibration.json`` beside the file is read.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .._compat import require
from ..config import ModelConfig, QuantizationConfig
from ..errors import CheckpointError, LabelSchemeError
from ..labels import normalize_id2label, read_checkpoint_biases
from . import gguf_names as names
from .check import check_tensors

from .formats import canonical_shapes
from .types import CheckpointInfo, QuantizedWeight

SUFFIX = ".gguf"
DENSE_TYPES = ("F32", "F16", "BF16")
Q8_0, Q8_0_BLOCK, Q8_0_BYTES = "Q8_0", 32, 34


def find_gguf(path: str | Path) -> Path | None:
    """The GGUF file ``path`` names: the file itself, or the only ``*.gguf`` of a folder without config.json."""
    path = Path(path)
    if path.is_file():
        return path if path.suffix.lower() == SUFFIX else None
    if not path.is_dir() or (path / "config.json").is_file():
        return None
    found = sorted(p for p in path.iterdir() if p.suffix.lower() == SUFFIX and p.is_file())
    if len(found) > 1:
        raise CheckpointError(f"folder '{path.name}' holds {len(found)} GGUF files ({', '.join(p.name for p in found)}); "
                              "pass the one to load as model=<folder>/<file>.gguf")
    return found[0] if found else None


def open_gguf(path: Path) -> Any:
    require("gguf", "reading GGUF checkpoints")
    import gguf

    try:
        return gguf.GGUFReader(path)
    except (ValueError, OSError, KeyError, IndexError) as exc:
        raise CheckpointError(f"'{path.name}' is not a readable GGUF file ({type(exc).__name__}); it is truncated, "
                              "corrupt or of a newer GGUF version than the installed gguf package reads") from None


def _field(reader: Any, key: str) -> Any:
    field = reader.get_field(key)
    return None if field is None else field.contents()


def _type_name(tensor: Any) -> str:
    return tensor.tensor_type.name


def _logical_shape(tensor: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in reversed(tensor.shape.tolist()))  # GGUF lists dims innermost first


def inspect_gguf(path: Path) -> CheckpointInfo:
    """Config, labels, quantization and calibration of a GGUF checkpoint; checks every tensor name and shape."""
    reader = open_gguf(path)
    arch = _field(reader, "general.architecture")
    if arch != names.ARCHITECTURE:
        raise CheckpointError(f"GGUF file '{path.name}' has architecture {arch!r}; expected {names.ARCHITECTURE!r} "
                              "(the Privacy Filter port)")
    missing = [k for k in names.REQUIRED if reader.get_field(names.key(k)) is None]
    labels = _field(reader, names.key(names.LABELS_KEY))
    if not labels:
        missing.append(names.LABELS_KEY)
    if missing:
        raise CheckpointError(f"GGUF file '{path.name}' lacks metadata {', '.join(names.key(k) for k in missing)}")
    _check_tokenizer(reader, path)
    tensors = {t.name: t for t in reader.tensors}
    values = {fld: cast(_field(reader, names.key(k))) for k, fld, cast in names.METADATA
              if reader.get_field(names.key(k)) is not None}
    embed = tensors.get(names.GLOBAL_NAMES["model.embed_tokens.weight"])
    if embed is None:
        raise CheckpointError(f"GGUF file '{path.name}' has no tensor 'token_embd.weight'")
    pad = _field(reader, "tokenizer.ggml.padding_token_id")
    config = ModelConfig(
        **values, vocab_size=_logical_shape(embed)[0], id2label=_labels(path, labels),
        classifier_bias=True, dtype={"F32": "float32", "BF16": "bfloat16"}.get(_type_name(embed), "float16"),
        **({"pad_token_id": int(pad)} if pad is not None else {}))
    _check_tensors(path, config, tensors)
    experts = [t for t in tensors.values() if t.name.split(".", 2)[-1] in names.EXPERT_WEIGHTS]
    quant = QuantizationConfig(bits=8, group_size=Q8_0_BLOCK) if any(
        _type_name(t) == Q8_0 for t in experts) else None
    return CheckpointInfo(path, "gguf", config, quant, (path,), read_checkpoint_biases(path.parent, {}))


def _labels(path: Path, labels: Any) -> tuple[str, ...]:
    try:
        return normalize_id2label(labels)
    except LabelSchemeError as exc:
        raise CheckpointError(f"GGUF file '{path.name}': {exc}") from exc


def _check_tokenizer(reader: Any, path: Path) -> None:
    model, pre = _field(reader, "tokenizer.ggml.model"), _field(reader, "tokenizer.ggml.pre")
    if (model is not None and model != names.TOKENIZER_MODEL) or (pre is not None and pre != names.TOKENIZER_PRE):
        raise CheckpointError(f"GGUF file '{path.name}' declares tokenizer {model!r}/{pre!r}; this model family "
                              f"uses o200k_base ({names.TOKENIZER_MODEL!r}/{names.TOKENIZER_PRE!r})")


def _expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    canon = canonical_shapes(config)
    shapes = {g: canon[c] for g, c in names.gguf_to_canonical(config).items()}
    e, d, i = config.num_local_experts, config.hidden_size, config.intermediate_size
    for n in range(config.num_hidden_layers):
        p = f"blk.{n}."
        shapes.update({p + names.EXPERT_WEIGHTS[0]: (e, i, d), p + names.EXPERT_WEIGHTS[1]: (e, i, d),
                       p + names.EXPERT_WEIGHTS[2]: (e, d, i), p + names.SPLIT_BIAS[1][0]: (e, i),
                       p + names.SPLIT_BIAS[1][1]: (e, i)})
    return shapes


def _check_tensors(path: Path, config: ModelConfig, tensors: dict[str, Any]) -> None:
    supported = DENSE_TYPES + (Q8_0,)
    check_tensors(_expected_shapes(config), {n: _logical_shape(t) for n, t in tensors.items()},
                  what=f"GGUF file '{path.name}' does not match its metadata",
                  dtypes={n: _type_name(t) for n, t in tensors.items()}, allowed_dtypes=lambda _: supported,
                  optional={names.GLOBAL_NAMES["score.bias"]})


# -- tensors ---------------------------------------------------------------------------------------------------
def q8_0_blocks(raw: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Q8_0 bytes -> (int8 codes ``shape``, float16 scales ``shape[:-1] + (shape[-1] // 32,)``)."""
    blocks = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1, Q8_0_BYTES)
    scales = blocks[:, :2].copy().view("<f2").astype(np.float16).reshape(*shape[:-1], shape[-1] // Q8_0_BLOCK)
    codes = blocks[:, 2:].view(np.int8).reshape(shape)
    return codes, scales


def dequantize_q8_0(raw: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """float32 ``shape``: value = d * q per block of 32 along the last axis."""
    codes, scales = q8_0_blocks(raw, shape)
    grouped = codes.reshape(*shape[:-1], -1, Q8_0_BLOCK).astype(np.float32)
    return (grouped * scales.astype(np.float32)[..., None]).reshape(shape)


def _dense(tensor: Any) -> np.ndarray:
    kind, shape = _type_name(tensor), _logical_shape(tensor)
    if kind == Q8_0:
        return dequantize_q8_0(tensor.data, shape)
    if kind == "BF16":
        from .affine import from_bfloat16_bits

        return from_bfloat16_bits(np.ascontiguousarray(tensor.data).view("<u2").reshape(shape))
    return np.array(tensor.data, dtype=tensor.data.dtype.newbyteorder("=")).reshape(shape)


def _affine(tensors: list[Any]) -> QuantizedWeight:
    """Q8_0 tensors [E, rows_k, cols] stacked on the rows -> one 8-bit affine QuantizedWeight [E, rows, cols]."""
    parts = [q8_0_blocks(t.data, _logical_shape(t)) for t in tensors]
    codes = np.concatenate([(c.astype(np.int16) + 128).astype(np.uint8) for c, _ in parts], axis=-2)
    scales = np.concatenate([s.astype(np.float32) for _, s in parts], axis=-2)
    words = np.ascontiguousarray(codes).view("<u4")  # four codes per little-endian word, first code lowest
    return QuantizedWeight(words.astype(np.uint32), scales, scales * np.float32(-128.0), bits=8, group_size=Q8_0_BLOCK)


def load_gguf(info: CheckpointInfo) -> dict[str, Any]:
    """The file's tensors as numpy in canonical naming and layout; Q8_0 experts stay 8-bit (QuantizedWeight)."""
    tensors = {t.name: t for t in open_gguf(info.path).tensors}
    config = info.config
    out: dict[str, Any] = {canon: _dense(tensors[g]) for g, canon in names.gguf_to_canonical(config).items()
                           if g in tensors}
    for n in range(config.num_hidden_layers):
        p, q = f"blk.{n}.", f"model.layers.{n}.mlp.experts."
        out[f"model.layers.{n}.self_attn.sinks"] = out[f"model.layers.{n}.self_attn.sinks"].astype(np.float32)
        gate, up, down = (tensors[p + w] for w in names.EXPERT_WEIGHTS)
        if all(_type_name(t) == Q8_0 for t in (gate, up, down)):
            out[q + "gate_up_proj"], out[q + "down_proj"] = _affine([gate, up]), _affine([down])
        else:  # [E, out, in] halves -> canonical [E, in, out]
            out[q + "gate_up_proj"] = np.concatenate([_dense(gate), _dense(up)], axis=1).transpose(0, 2, 1)
            out[q + "down_proj"] = _dense(down).transpose(0, 2, 1)
        out[q + "gate_up_proj_bias"] = np.concatenate([_dense(tensors[p + b]) for b in names.SPLIT_BIAS[1]], axis=-1)
    if "score.bias" not in out:
        out["score.bias"] = np.zeros(config.num_labels, dtype=np.float32)
    return out
