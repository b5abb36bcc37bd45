"""Resolve a model argument (local folder or Hugging Face Hub repo id) to a local checkpoint folder.

Only the files a checkpoint needs are fetched; the Hub cache and ``HF_HUB_OFFLINE`` are honoured at call time,
and every Hub failure becomes a ModelNotFoundError naming the repo (and the file when one is at fault).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import ModelNotFoundError
from .files import MODEL_FILE_NAMES

# Files a checkpoint of any supported format may need; anything else in a repo (tokenizer.json, README, onnx,
# pickles) is never downloaded.
HUB_ALLOW_PATTERNS = MODEL_FILE_NAMES + (
    "model.safetensors", "model.safetensors.index.json", "model-*-of-*.safetensors", "weights.safetensors")
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$|^[A-Za-z0-9][\w.\-]*$")
TRUE_VALUES = {"1", "true", "yes", "on"}


def _env_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in TRUE_VALUES


def _env_cache_dir() -> str | None:
    # huggingface_hub reads these once at import; reading them here lets a later change take effect.
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def resolve_model_path(model: str | os.PathLike, *, revision: str | None = None,
                       cache_dir: str | os.PathLike | None = None, local_files_only: bool | None = None) -> Path:
    """Return a local folder holding the checkpoint ``model`` names.

    Args:
        model: a local folder, or a Hub repo id such as ``"OpenMed/privacy-filter-nemotron"``.
        revision: Hub branch, tag or commit (ignored for local folders).
        cache_dir: Hub cache folder; default: ``HF_HUB_CACHE``, ``HF_HOME/hub`` or huggingface_hub's default.
        local_files_only: never touch the network; default: true when ``HF_HUB_OFFLINE`` is set.

    Raises:
        ModelNotFoundError: the folder does not exist, or the repo/revision/file cannot be found or fetched.
    """
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.is_dir() or (path.is_file() and path.suffix.lower() == ".gguf"):  # GGUF: one file is the model
        return path
    if path.exists():
        raise ModelNotFoundError(f"model path '{text}' is a file; pass the folder that holds config.json and the "
                                 "safetensors weights, or a .gguf file")
    if not REPO_ID.match(text) or text.startswith((".", "~")):
        raise ModelNotFoundError(f"model folder '{text}' does not exist (and it is not a Hub repo id like "
                                 "'OpenMed/privacy-filter-nemotron')")
    offline = _env_offline() if local_files_only is None else bool(local_files_only)
    cache = os.fspath(cache_dir) if cache_dir is not None else _env_cache_dir()
    where = f"Hub repo '{text}'" + (f" at revision '{revision}'" if revision else "")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub import errors as hub_errors
    except ImportError as exc:  # a core dependency, but say what is wrong
        raise ModelNotFoundError(f"cannot fetch {where}: huggingface_hub is not installed "
                                 "(pip install huggingface_hub)") from exc
    try:
        folder = Path(snapshot_download(text, revision=revision, cache_dir=cache, local_files_only=offline,
                                        allow_patterns=list(HUB_ALLOW_PATTERNS)))
    except hub_errors.GatedRepoError as exc:
        raise ModelNotFoundError(f"{where} is gated: authentication needed. Accept its terms on the Hub, then log in "
                                 "(hf auth login) or set HF_TOKEN") from exc
    except hub_errors.RepositoryNotFoundError as exc:
        raise ModelNotFoundError(f"{where} was not found: it does not exist, or it is private and the current token "
                                 "(HF_TOKEN / hf auth login) has no access") from exc
    except hub_errors.RevisionNotFoundError as exc:
        raise ModelNotFoundError(f"{where}: the revision does not exist") from exc
    except hub_errors.LocalEntryNotFoundError as exc:
        raise ModelNotFoundError(f"{where} is not in the local Hub cache{f' ({cache})' if cache else ''} and "
                                 f"{_why_not_fetched(exc, local_files_only, offline)}; download it once while "
                                 "online, or pass a local folder") from exc
    except hub_errors.EntryNotFoundError as exc:
        raise ModelNotFoundError(f"{where}: a required file is missing ({exc.__class__.__name__})") from exc
    except (hub_errors.HfHubHTTPError, OSError, ValueError) as exc:
        raise ModelNotFoundError(f"cannot fetch {where}: {exc.__class__.__name__}; check the network or pass a "
                                 "local folder") from exc
    shards = _missing_shards(folder)
    if shards and not offline:
        try:
            folder = Path(snapshot_download(text, revision=revision, cache_dir=cache, allow_patterns=shards))
        except (hub_errors.HfHubHTTPError, OSError, ValueError) as exc:
            raise ModelNotFoundError(f"cannot fetch {where}: shard files {', '.join(shards)} "
                                     f"({exc.__class__.__name__})") from exc
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(f"{where} has no file 'config.json' (in {folder}); it is not a Privacy Filter "
                                 "checkpoint")
    weights = [p.name for p in folder.glob("*.safetensors")]
    if not weights:
        raise ModelNotFoundError(f"{where} has no safetensors weight file ('model.safetensors' or "
                                 "'weights.safetensors'); only safetensors weights are loaded")
    return folder


def _why_not_fetched(exc: BaseException, local_files_only: bool | None, offline: bool) -> str:
    """Why the Hub was not asked: offline mode (which switch), or no connection (the underlying error's type)."""
    if local_files_only:
        return "downloads are disabled (local_files_only=True)"
    if offline:
        return "downloads are disabled (HF_HUB_OFFLINE is set)"
    try:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:  # read by huggingface_hub when it was first imported
            return "downloads are disabled (HF_HUB_OFFLINE was set when huggingface_hub was imported)"
    except ImportError:
        pass
    cause = exc.__cause__ or exc.__context__
    return (f"the Hub could not be reached ({type(cause).__name__ if cause else 'no connection'}: no network, a "
            "proxy or firewall, or the Hub is down)")


def _missing_shards(folder: Path) -> list[str]:
    """Shard files named by ``model.safetensors.index.json`` that are not in ``folder`` yet."""
    import json

    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        return []
    try:
        names = set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values())
    except (OSError, ValueError, AttributeError):
        return []  # inspect_checkpoint reports a broken index with a precise message
    return sorted(n for n in names if not (folder / n).is_file())
