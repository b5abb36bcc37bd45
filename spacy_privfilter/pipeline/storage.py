"""Save and load of the ``privacy_filter`` component: the model files travel with the pipeline.

By default ``to_disk`` copies the model folder's files (config, labels, calibration, safetensors, tokenizer
ranks) into ``<pipeline>/<component>/model`` and ``from_disk`` points the component at that copy, so
``spacy.load`` works offline. With ``save_model="reference"`` only the model name is stored.
"""
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Tuple

import srsly
from spacy.util import ensure_path

from ..errors import CheckpointError, ConfigError
from ..checkpoint.files import copy_model_files, read_model_files, write_model_files, write_tokenizer_file
from .settings import SAVE_MODES, FilterSettings

CFG_FILE = "cfg.json"
MODEL_DIR = "model"
SERIALIZATION_VERSION = 1


class ModelStorage:
    """Component mixin: ``to_disk``/``from_disk``/``to_bytes``/``from_bytes`` of the model reference or files.

    The host class sets ``name``, ``settings``, ``_source`` (model, revision), ``_model_path``, ``_detector``,
    ``_injected`` and ``_tmpdir``.
    """

    name: str
    settings: FilterSettings
    _source: Tuple[str, Optional[str]]
    _model_path: Optional[Path]
    _injected: bool
    _tmpdir: Optional[tempfile.TemporaryDirectory]

    def _cfg(self) -> Dict[str, Any]:
        model, revision = self._source
        cfg = {"version": SERIALIZATION_VERSION, "model": model, "revision": revision,
               "save_model": self.settings.save_model, "files": []}
        classes = getattr(self, "_classes", None)
        if classes:  # so that a loaded pipeline reports its labels before the model loads
            cfg["classes"] = list(classes)
        return cfg

    def _model_folder(self) -> Path:
        """The folder whose files a saved pipeline stores."""
        if self._model_path is not None:
            return self._model_path
        if self._injected:
            raise ConfigError(
                "privacy_filter: the detector was assigned directly, so there are no model files to store. "
                "Fix: set save_model='reference', or let the component load its model from 'model'")
        model, revision = self._source
        if Path(model).is_dir():
            return Path(model)
        from ..checkpoint import resolve_model_path

        return Path(resolve_model_path(model, revision=revision))

    def to_disk(self, path, *, exclude: Iterable[str] = tuple()) -> None:
        path = ensure_path(path)
        path.mkdir(parents=True, exist_ok=True)
        cfg = self._cfg()
        if self.settings.save_model == "copy":
            # A fresh folder swapped in whole: files of a model saved here before (an MLX manifest, other weights,
            # an index) must not stay behind, where loading would find them before the new ones.
            target, fresh = path / MODEL_DIR, path / f".{MODEL_DIR}.new"
            shutil.rmtree(fresh, ignore_errors=True)
            cfg["files"] = copy_model_files(self._model_folder(), fresh)
            if write_tokenizer_file(fresh) and "o200k_base.tiktoken" not in cfg["files"]:
                cfg["files"].append("o200k_base.tiktoken")
            swap_folder(fresh, target)
        srsly.write_json(path / CFG_FILE, cfg)

    def from_disk(self, path, *, exclude: Iterable[str] = tuple()) -> "ModelStorage":
        path = ensure_path(path)
        cfg = self._read_cfg(srsly.read_json(path / CFG_FILE))
        if cfg["save_model"] == "copy":
            folder = path / MODEL_DIR
            missing = [name for name in cfg["files"] if not (folder / name).is_file()]
            if missing:
                raise CheckpointError(f"saved pipeline component '{self.name}' lacks model files "
                                      f"{', '.join(missing)} in '{folder}'. Fix: save the pipeline again")
            self._use_stored_model(folder)
            self._tmpdir = only_listed(folder, cfg["files"])
            if self._tmpdir is not None:
                self._model_path = Path(self._tmpdir.name)
        else:
            self._use_stored_model(None)
        return self

    def to_bytes(self, *, exclude: Iterable[str] = tuple()) -> bytes:
        cfg = self._cfg()
        files: Dict[str, bytes] = {}
        if self.settings.save_model == "copy":
            files = read_model_files(self._model_folder())
            cfg["files"] = sorted(files)
        return srsly.msgpack_dumps({"cfg": cfg, "files": files})

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = tuple()) -> "ModelStorage":
        try:
            data = srsly.msgpack_loads(bytes_data)
        except Exception as exc:  # msgpack raises several types for damaged input
            raise CheckpointError(f"saved component '{self.name}': the bytes are not a serialized component "
                                  f"({type(exc).__name__})") from None
        if not isinstance(data, dict):
            raise CheckpointError(f"saved component '{self.name}': the bytes hold a {type(data).__name__}, not the "
                                  "expected {'cfg': ..., 'files': ...} object")
        cfg = self._read_cfg(data.get("cfg", {}))
        files = data.get("files") or {}
        if not isinstance(files, dict) or not all(isinstance(v, bytes) for v in files.values()):
            raise CheckpointError(f"saved component '{self.name}': field 'files' must map file names to bytes")
        if cfg["save_model"] == "copy":
            # Backends read files, so the bytes go to a private folder that lives as long as this component.
            tmpdir = tempfile.TemporaryDirectory(prefix="spacy_privfilter_")
            write_model_files(files, tmpdir.name)
            self._use_stored_model(Path(tmpdir.name))
            self._tmpdir = tmpdir
        else:
            self._use_stored_model(None)
        return self

    def _read_cfg(self, cfg: Dict[str, Any]) -> Dict[str, Any]:
        if not isinstance(cfg, dict):
            raise CheckpointError(f"saved component '{self.name}': field 'cfg' must be an object; got "
                                  f"{type(cfg).__name__}")
        if cfg.get("version") != SERIALIZATION_VERSION or cfg.get("save_model") not in SAVE_MODES:
            raise CheckpointError(f"saved component '{self.name}' has an unknown format (version "
                                  f"{str(cfg.get('version'))[:20]!r}); expected version {SERIALIZATION_VERSION}")
        for field, ok in (("model", isinstance(cfg.get("model"), str)),
                          ("revision", isinstance(cfg.get("revision"), (str, type(None)))),
                          ("files", isinstance(cfg.get("files", []), list)
                           and all(isinstance(n, str) for n in cfg.get("files", [])))):
            if not ok:
                raise CheckpointError(f"saved component '{self.name}': field '{field}' of its cfg has the wrong "
                                      "type; save the pipeline again")
        self._source = (cfg["model"], cfg.get("revision"))
        if isinstance(cfg.get("classes"), list):
            self._classes = tuple(str(c) for c in cfg["classes"])
        return cfg

    def _use_stored_model(self, folder: Optional[Path]) -> None:
        self._model_path = folder
        self._detector = None
        self._injected = False
        self._tmpdir = None



def swap_folder(fresh: Path, target: Path) -> None:
    """Put folder ``fresh`` in the place of ``target`` (whose old content is deleted afterwards)."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(fresh, target)
    shutil.rmtree(old, ignore_errors=True)


def only_listed(folder: Path, files: Iterable[str]) -> Optional[tempfile.TemporaryDirectory]:
    """None when ``folder`` holds just the files its cfg lists; else a private folder with only those (hard links,
    or copies across devices), so that a stale file left by an older save can never be the one that is loaded."""
    listed = set(files)
    if {p.name for p in folder.iterdir() if p.is_file()} <= listed:
        return None
    tmpdir = tempfile.TemporaryDirectory(prefix="spacy_privfilter_")
    for name in sorted(listed):
        try:
            os.link(folder / name, Path(tmpdir.name) / name)
        except OSError:
            shutil.copyfile(folder / name, Path(tmpdir.name) / name)
    return tmpdir
