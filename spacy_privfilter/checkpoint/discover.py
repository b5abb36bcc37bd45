"""What a checkpoint folder holds: its format, config, labels, quantization and weight files.

``inspect_checkpoint`` reads ``config.json``, ``id2label.json``, ``openmed-mlx.json``,
``viterbi_calibration.json`` and the safetensors headers; no tensor data.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from ..config import QuantizationConfig
from ..errors import CheckpointError, ModelNotFoundError
from ..labels import read_checkpoint_biases, read_id2label
from .config_json import HF_MODEL_TYPE, OPF_MODEL_TYPE, read_config, read_quantization
from .safetensors_io import read_header
from .types import CheckpointFormat, CheckpointInfo

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".npz", ".pkl", ".pickle", ".h5", ".msgpack")


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
    from .gguf import find_gguf, inspect_gguf  # gguf.py builds on this module's types

    gguf_file = find_gguf(path)
    if gguf_file is not None:  # a GGUF file, or a folder holding one and no config.json
        return inspect_gguf(gguf_file)
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
    quant = _typed(lambda d: _quantization(fmt, d, manifest, names, folder), raw, folder)
    config = _typed(lambda d: read_config(d, id2label=_id2label(folder, raw)), raw, folder)
    if fmt != "hf" and "classifier_bias" not in raw and "unembedding_bias" not in raw:
        # No flag (OpenMed's runtime would default to false): let the weights say whether the head has a bias.
        config = config.with_updates(classifier_bias="unembedding.bias" in names)
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
            if f"'{folder.name}'" in str(exc):
                raise
            # A parser error that names the field but not the checkpoint: say which folder's config it is.
            raise CheckpointError(f"{str(exc).replace('config.json:', f'config.json in {folder.name!r}:', 1)}"
                                  ) from None
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
    if raw.get("_mlx_quantization"):
        return read_quantization(raw["_mlx_quantization"], where=f"'{folder.name}/config.json' (_mlx_quantization)")
    block = (manifest or {}).get("quantization")
    if block:
        return read_quantization(block, where=f"'{folder.name}/openmed-mlx.json' (quantization)")
    if has_scales:
        raise CheckpointError(
            f"MLX checkpoint '{folder.name}' has quantized tensors (*.scales) but config.json has no "
            "_mlx_quantization block, so the bit width and group size are unknown (they are never guessed); "
            'add "_mlx_quantization": {"bits": 8, "group_size": 64} matching how it was quantized')
    return None


def _id2label(folder: Path, raw: Mapping[str, Any]) -> tuple[str, ...]:
    return read_id2label(folder, raw)


def _viterbi_biases(folder: Path, raw: Mapping[str, Any]) -> dict[str, float] | None:
    return read_checkpoint_biases(folder, raw)


__all__ = ["inspect_checkpoint"]
