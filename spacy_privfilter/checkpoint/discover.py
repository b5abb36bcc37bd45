"""Checkpoint discovery and loading (folder or Hub id) for the HF, opf and OpenMed MLX formats.

CONTRACT (owned by issue #3 checkpoint work; other modules code against it):

    resolve_model_path(model, *, revision=None, cache_dir=None, local_files_only=None) -> Path
        A local folder is used as is. Otherwise ``model`` is a Hub repo id fetched with huggingface_hub
        (only the files needed; cache and HF_HUB_OFFLINE honoured); errors -> ModelNotFoundError naming repo+file.

    inspect_checkpoint(path) -> CheckpointInfo     (reads config/manifest and safetensors headers only, no tensors)

    load_state_dict(info, *, framework: "pt" | "mlx" | "numpy") -> dict[str, Tensor | QuantizedWeight]
        Tensors in *canonical HF naming and semantics*, whatever the file format:
            model.embed_tokens.weight                       [V, D]
            model.layers.{n}.input_layernorm.weight         [D]
            model.layers.{n}.self_attn.{q,k,v,o}_proj.weight / .bias   (Linear: [out, in])
            model.layers.{n}.self_attn.sinks                [H] float32, natural-log units (opf x ln2 at load)
            model.layers.{n}.post_attention_layernorm.weight [D]
            model.layers.{n}.mlp.router.weight / .bias      [E, D] / [E]
            model.layers.{n}.mlp.experts.gate_up_proj       [E, D, 2I]  ([E, in, out])
            model.layers.{n}.mlp.experts.gate_up_proj_bias  [E, 2I]
            model.layers.{n}.mlp.experts.down_proj          [E, I, D]
            model.layers.{n}.mlp.experts.down_proj_bias     [E, D]
            model.norm.weight                               [D]
            score.weight / score.bias                       [C, D] / [C] (zeros when the file has no bias)
        Quantized modules (MLX 8-bit) are QuantizedWeight values instead of dense tensors; for the two expert
        tensors the QuantizedWeight is in MLX's transposed layout ([E, out, in] once dequantized). The fused
        qkv is split by rows into q/k/v QuantizedWeights.
        Dtypes are as stored (bf16 stays bf16 for pt/mlx; numpy upcasts bf16 to float32).
        MLX artifacts are converted from HF checkpoints, so their sinks are natural-log (no ln2 applied) and their
        window is HF's one-sided ``sliding_window`` unless the config has explicit bidirectional contexts.

    save_checkpoint(state_dict, config, dst, *, format: "hf" | "opf" | "mlx-bf16" | "mlx-8bit", dtype=None) -> Path
        Writes the real on-disk layout of each format from a canonical state dict (torch tensors or numpy arrays).

Implementation: ``hub.py`` (Hub resolution), ``formats.py`` (rename tables and shapes as data), ``loader.py``
(strict loading), ``writer.py`` (saving), ``safetensors_io.py`` (header checks, numpy reading, streaming writes).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

from ..config import HF_MODEL_TYPE, OPF_MODEL_TYPE, ModelConfig, QuantizationConfig
from ..errors import CheckpointError, ModelNotFoundError
from .hub import resolve_model_path
from .safetensors_io import FileRegion, read_header

CheckpointFormat = Literal["hf", "opf", "mlx"]
SAVE_FORMATS = ("hf", "opf", "mlx-bf16", "mlx-8bit")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".npz", ".pkl", ".pickle", ".h5", ".msgpack")


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    format: CheckpointFormat
    config: ModelConfig
    quantization: QuantizationConfig | None
    weight_files: tuple[Path, ...]
    viterbi_biases: Mapping[str, float] | None = None


@dataclass(frozen=True)
class QuantizedWeight:
    """Affine-quantized weight as MLX stores it: uint32-packed codes + per-group scales and biases.

    ``weight``: uint32 [..., rows, cols * bits / 32]; ``scales``/``biases``: [..., rows, cols / group_size].
    Dequantized value: ``scale * q + bias`` per group of ``group_size`` consecutive columns.
    """

    weight: Any
    scales: Any
    biases: Any
    bits: int
    group_size: int
    source: FileRegion | None = None  # where ``weight``'s bytes lie on disk, when read from a file


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"'{path.name}' in '{path.parent.name}' is not readable JSON "
                              f"({exc.__class__.__name__}); the checkpoint folder is damaged") from exc


def inspect_checkpoint(path: str | Path) -> CheckpointInfo:
    """Detect the format of the checkpoint folder ``path`` and read its config, labels and quantization.

    Reads ``config.json``, ``id2label.json``, ``openmed-mlx.json``, ``viterbi_calibration.json`` and the
    safetensors headers (which also catches truncated files early); no tensor data is read.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ModelNotFoundError(f"checkpoint folder '{folder}' does not exist")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"checkpoint folder '{folder.name}' has no config.json; a Privacy Filter checkpoint "
                              "needs config.json next to its safetensors weights")
    raw = _read_json(config_path)
    if not isinstance(raw, dict):
        raise CheckpointError(f"config.json in '{folder.name}' is not a JSON object")
    manifest_path = folder / "openmed-mlx.json"
    manifest = _read_json(manifest_path) if manifest_path.is_file() else None
    manifest = manifest if isinstance(manifest, dict) else None
    is_mlx = manifest is not None or any(str(k).startswith("_mlx_") for k in raw)
    weight_files = _weight_files(folder, "mlx" if is_mlx else "hf-or-opf", manifest)
    names = {name for f in weight_files for name in read_header(f).tensors}
    fmt = "mlx" if is_mlx else _hf_or_opf(raw, names, folder)
    if fmt == "opf":
        raw = {**raw, "model_type": OPF_MODEL_TYPE}
    if fmt != "hf" and "classifier_bias" not in raw and "unembedding_bias" not in raw:
        # No flag (OpenMed's runtime would default to false): let the weights say whether the head has a bias.
        raw = {**raw, "classifier_bias": "unembedding.bias" in names}
    quant = _typed(lambda d: _quantization(fmt, d, manifest, names, folder), raw, folder)
    labels = _id2label(folder, raw)
    if labels is not None and not isinstance(labels, (dict, list)):
        raise CheckpointError(f"id2label in '{folder.name}' must be an object {{\"0\": \"O\", ...}} or a list of "
                              f"labels; got {type(labels).__name__}")
    config = _typed(lambda d: ModelConfig.from_dict(d, id2label=labels), raw, folder)
    if config.num_labels == 0:
        raise CheckpointError(f"checkpoint '{folder.name}' has no id2label (neither in config.json nor in "
                              "id2label.json); the label names are needed to decode spans")
    return CheckpointInfo(folder, fmt, config, quant, weight_files, _viterbi_biases(folder, raw))


class _Reads(dict):
    """A dict that remembers the last key read, so a conversion that fails can name its field."""

    last: Any = None

    def __getitem__(self, key: Any) -> Any:
        self.last = key
        return super().__getitem__(key)

    def get(self, key: Any, default: Any = None) -> Any:
        self.last = key
        return super().get(key, default)


def _typed(parse: Any, raw: Mapping[str, Any], folder: Path) -> Any:
    """``parse(raw)``, with a wrong type or value in config.json (``"hidden_size": "big"``, a list where a number
    belongs, a number too large) raised as a CheckpointError naming the file and the field, never the value."""
    reads = _Reads(raw)
    try:
        return parse(reads)
    except (TypeError, ValueError, KeyError, OverflowError, AttributeError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        field = exc.args[0] if isinstance(exc, KeyError) and exc.args else reads.last
        problem = "is missing" if isinstance(exc, KeyError) else f"has the wrong type or value ({type(exc).__name__})"
        raise CheckpointError(f"config.json in '{folder.name}': field {field!r} {problem}; the checkpoint "
                              "config is damaged or not a Privacy Filter config") from None


def _hf_or_opf(raw: Mapping[str, Any], names: set[str], folder: Path) -> CheckpointFormat:
    model_type = raw.get("model_type")
    if model_type == HF_MODEL_TYPE:
        return "hf"
    if model_type == OPF_MODEL_TYPE:
        return "opf"
    if model_type is None and any(n.startswith("block.") for n in names):
        return "opf"
    if model_type is None and "model.embed_tokens.weight" in names:
        return "hf"
    raise CheckpointError(
        f"checkpoint '{folder.name}' has model_type {model_type!r}; expected {HF_MODEL_TYPE!r} (Hugging Face), "
        f"{OPF_MODEL_TYPE!r} (original opf) or an OpenMed MLX artifact (openmed-mlx.json)")


def _weight_files(folder: Path, kind: str, manifest: Mapping[str, Any] | None) -> tuple[Path, ...]:
    present = sorted(p.name for p in folder.iterdir() if p.is_file())
    safetensors = [n for n in present if n.endswith(".safetensors")]
    if not safetensors:
        other = [n for n in present if n.endswith(PICKLE_SUFFIXES)]
        if other:
            raise CheckpointError(
                f"checkpoint '{folder.name}' has only non-safetensors weights ({', '.join(other)}); only "
                "safetensors weights are loaded (pickle-based files are never loaded). Convert them to "
                "safetensors, or use a repo that publishes model.safetensors / weights.safetensors")
        raise CheckpointError(f"checkpoint '{folder.name}' has no weight file: expected model.safetensors "
                              "(Hugging Face/opf) or weights.safetensors (OpenMed MLX)")
    if kind == "mlx":
        preferred = str((manifest or {}).get("preferred_weights") or "weights.safetensors")
        name = preferred if preferred.endswith(".safetensors") else "weights.safetensors"
        if name not in safetensors:
            raise CheckpointError(f"MLX checkpoint '{folder.name}' has no '{name}'; only safetensors weights are "
                                  f"loaded (found: {', '.join(safetensors)})")
        return (folder / name,)
    if "model.safetensors.index.json" in present:
        index = _read_json(folder / "model.safetensors.index.json")
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"model.safetensors.index.json in '{folder.name}' has no weight_map")
        shards = sorted(set(map(str, weight_map.values())))
        missing = [s for s in shards if s not in safetensors]
        if missing:
            raise CheckpointError(f"checkpoint '{folder.name}' is missing shard file(s) {', '.join(missing)} "
                                  "named by model.safetensors.index.json")
        return tuple(folder / s for s in shards)
    if "model.safetensors" in safetensors:
        return (folder / "model.safetensors",)
    return tuple(folder / n for n in safetensors)


def _quantization(fmt: str, raw: Mapping[str, Any], manifest: Mapping[str, Any] | None, names: set[str],
                  folder: Path) -> QuantizationConfig | None:
    has_scales = any(n.endswith(".scales") for n in names)
    if fmt == "opf":
        if has_scales or any(n.endswith(".blocks") for n in names):
            raise CheckpointError(f"opf checkpoint '{folder.name}' stores MXFP4 expert weights (.blocks/.scales); "
                                  "only dense (bfloat16/float32) opf weights are supported")
        return None
    if fmt != "mlx":
        return None
    block = raw.get("_mlx_quantization") or (manifest or {}).get("quantization")
    if block:
        if not isinstance(block, dict):
            raise CheckpointError(f"_mlx_quantization in '{folder.name}' must be an object like "
                                  '{"bits": 8, "group_size": 64}')
        return QuantizationConfig.from_dict(block)
    if has_scales:
        raise CheckpointError(
            f"MLX checkpoint '{folder.name}' has quantized tensors (*.scales) but config.json has no "
            "_mlx_quantization block, so the bit width and group size are unknown (they are never guessed); "
            'add "_mlx_quantization": {"bits": 8, "group_size": 64} matching how it was quantized')
    return None


def _id2label(folder: Path, raw: Mapping[str, Any]) -> Any:
    if raw.get("id2label"):
        return raw["id2label"]
    if (folder / "id2label.json").is_file():
        return _read_json(folder / "id2label.json")
    return raw.get("ner_class_names")


def _viterbi_biases(folder: Path, raw: Mapping[str, Any]) -> dict[str, float] | None:
    calibration = folder / "viterbi_calibration.json"
    if calibration.is_file():
        data = _read_json(calibration)
        try:
            biases = data["operating_points"]["default"]["biases"]
        except (KeyError, TypeError):
            biases = data.get("biases") if isinstance(data, dict) else None
        source = "viterbi_calibration.json"
    else:
        biases, source = raw.get("_mlx_viterbi_biases"), "_mlx_viterbi_biases"
    if biases is None:
        return None
    if not isinstance(biases, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                               for v in biases.values()):
        raise CheckpointError(f"{source} in '{folder.name}' must map transition_bias_* names to numbers "
                              '(viterbi_calibration.json: {"operating_points": {"default": {"biases": {...}}}})')
    return {str(k): float(v) for k, v in biases.items()}


def load_state_dict(info: CheckpointInfo, *, framework: str = "pt") -> dict[str, Any]:
    """Read the checkpoint's tensors in canonical HF naming and semantics (see the module contract).

    Raises:
        CheckpointError: missing/unexpected/mis-shaped tensors (one error listing all), a label count that does
            not match id2label, or a truncated/corrupt weight file.
    """
    from .loader import load
    return load(info, framework=framework)


def save_checkpoint(state_dict: Mapping[str, Any], config: ModelConfig, dst: str | Path, *, format: str = "hf",
                    dtype: str | None = None, source_model_id: str | None = None) -> Path:
    """Write ``state_dict`` (canonical names; torch tensors or numpy arrays) as a ``format`` checkpoint folder.

    Args:
        state_dict: canonical tensors (see the module contract); values are read one at a time.
        config: the architecture; its id2label is written with the weights.
        dst: folder to create or overwrite files in.
        format: "hf", "opf", "mlx-bf16" or "mlx-8bit".
        dtype: None keeps each tensor's dtype; "float32" or "bfloat16" casts (sinks, and MLX norms, stay float32).
        source_model_id: recorded in the OpenMed manifest of MLX artifacts.

    Returns:
        The checkpoint folder.
    """
    from .writer import write_checkpoint
    return write_checkpoint(state_dict, config, dst, format=format, dtype=dtype, source_model_id=source_model_id)


__all__ = ["CheckpointInfo", "QuantizedWeight", "SAVE_FORMATS", "inspect_checkpoint", "load_state_dict",
           "resolve_model_path", "save_checkpoint"]
