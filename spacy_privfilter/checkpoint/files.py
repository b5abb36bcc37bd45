"""The model files a saved pipeline carries, so that ``spacy.load`` works offline.

Only data files are copied (JSON, safetensors, the tokenizer's rank file); nothing executable and
nothing pickled.
"""
from __future__ import annotations

import base64
import hashlib
import os
import shutil
from pathlib import Path

from ..errors import CheckpointError

# Exact names first, then globs; together they cover the HF, opf and OpenMed MLX layouts.
MODEL_FILE_NAMES = ("config.json", "id2label.json", "openmed-mlx.json", "viterbi_calibration.json",
                    "o200k_base.tiktoken")
MODEL_FILE_GLOBS = ("*.safetensors", "*.safetensors.index.json")
TOKENIZER_FILE = "o200k_base.tiktoken"


def list_model_files(folder: str | os.PathLike) -> list[Path]:
    """The files of a model folder that a saved pipeline needs (sorted by name).

    Raises:
        CheckpointError: the folder has no ``config.json`` or no ``*.safetensors`` file.
    """
    folder = Path(folder)
    gguf = _gguf_files(folder)
    if gguf is not None:
        return gguf
    found = {folder / name for name in MODEL_FILE_NAMES if (folder / name).is_file()}
    for pattern in MODEL_FILE_GLOBS:
        found.update(p for p in folder.glob(pattern) if p.is_file())
    for path in found:
        check_link(folder, path)
    names = {p.name for p in found}
    missing = [n for n in ("config.json",) if n not in names]
    if not any(n.endswith(".safetensors") for n in names):
        missing.append("*.safetensors")
    if missing:
        raise CheckpointError(f"model folder '{folder}' lacks {', '.join(missing)}; cannot store the model "
                              "in the pipeline. Fix: point 'model' at a complete checkpoint, or set "
                              "save_model='reference'")
    return sorted(found, key=lambda p: p.name)


def _gguf_files(path: Path) -> list[Path] | None:
    """A GGUF model's files (the .gguf, plus calibration and tokenizer beside it), or None for other formats."""
    from .gguf import find_gguf

    gguf = find_gguf(path)
    if gguf is None:
        return None
    extra = (gguf.parent / name for name in ("viterbi_calibration.json", TOKENIZER_FILE))
    return sorted([gguf, *(p for p in extra if p.is_file())], key=lambda p: p.name)


def check_link(folder: Path, path: Path) -> None:
    """Refuse a symlink that leads out of the model folder: a saved pipeline would carry whatever it points at
    (a key, a password file) to everyone it is shared with. The Hugging Face cache's own links
    (``snapshots/<rev>/x -> ../../blobs/<hash>``) stay inside the repo's cache folder and are followed.
    """
    if not path.is_symlink():
        return
    folder = folder.resolve()
    roots = [folder] + ([folder.parent.parent] if folder.parent.name == "snapshots" else [])
    real = path.resolve()
    if not any(real == root or root in real.parents for root in roots):
        raise CheckpointError(f"model file '{path.name}' in '{folder}' is a symbolic link to a file outside the "
                              "model folder; refusing to copy it into a saved pipeline. Fix: replace the link with "
                              "the real file, or set save_model='reference'")


def copy_model_files(src: str | os.PathLike, dst: str | os.PathLike) -> list[str]:
    """Copy the needed files of model folder ``src`` into ``dst`` (created); returns the copied names."""
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    names = []
    for path in list_model_files(src):
        target = dst / path.name
        if path.resolve() != target.resolve():
            shutil.copyfile(path, target)
        names.append(path.name)
    return names


def read_model_files(folder: str | os.PathLike) -> dict[str, bytes]:
    """``{file name: bytes}`` of the needed files of a model folder (for ``to_bytes``)."""
    return {path.name: path.read_bytes() for path in list_model_files(folder)}


def write_model_files(files: dict[str, bytes], dst: str | os.PathLike) -> Path:
    """Write ``{file name: bytes}`` into folder ``dst``; names must be plain file names."""
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
            raise CheckpointError(f"refusing to write model file with a path-like name {name!r}")
        (dst / name).write_bytes(data)
    return dst


def write_tokenizer_file(dst: str | os.PathLike) -> bool:
    """Write ``o200k_base.tiktoken`` into ``dst`` from the loaded tokenizer when the folder has none.

    The file is rebuilt from tiktoken's rank table and written only if its sha256 equals the pinned one, so a
    saved pipeline tokenizes without network or cache. Returns True when the file is present afterwards.
    """
    target = Path(dst) / TOKENIZER_FILE
    if target.is_file():
        return True
    from ..tokens import O200K_SHA256, get_tokenizer

    ranks = getattr(get_tokenizer().encoding, "_mergeable_ranks", None)
    if not isinstance(ranks, dict) or not ranks:
        return False
    lines = [base64.b64encode(token) + b" " + str(rank).encode() + b"\n"
             for token, rank in sorted(ranks.items(), key=lambda item: item[1])]
    data = b"".join(lines)
    if hashlib.sha256(data).hexdigest() != O200K_SHA256:
        return False
    target.write_bytes(data)
    return True
