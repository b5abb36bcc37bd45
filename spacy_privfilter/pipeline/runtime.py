"""Where a ``privacy_filter`` component's model runs, and one loaded model per process for equal settings.

``device="auto"`` follows spaCy: after ``spacy.prefer_gpu()`` / ``require_gpu()`` thinc's current ops are on a
GPU and the model goes there too; after ``spacy.require_cpu()`` (or by default) the ops are on the CPU and so
is the model, wherever spaCy could have used a GPU. Where thinc can use no GPU at all (Linux without CuPy),
its ops say nothing about torch's devices and the backend picks (CUDA, then MPS, then CPU).
"""
from __future__ import annotations

import os
import threading
import weakref
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from ..errors import ConfigError

_MODELS: "weakref.WeakValueDictionary[Tuple[Any, ...], Any]" = weakref.WeakValueDictionary()
_LOCK = threading.Lock()


def thinc_device() -> Optional[str]:
    """The torch device spaCy's current (thinc) ops stand for, or None when they do not decide one."""
    from thinc.backends import context_ops
    from thinc.util import has_gpu

    ops = context_ops.get()
    if ops is None:
        return None
    name = getattr(ops, "name", "")
    if name == "cupy":
        try:
            import cupy

            return f"cuda:{int(cupy.cuda.Device().id)}"
        except (ImportError, RuntimeError):
            return f"cuda:{max(0, int(getattr(ops, 'device_id', 0)))}"
    if name == "mps":
        return "mps"
    return "cpu" if has_gpu else None


def resolve_device(device: str, backend: str) -> str:
    """``device`` with ``auto`` replaced by spaCy's choice where spaCy makes one the backend can use."""
    if device != "auto":
        return device
    chosen = thinc_device()
    if chosen is None or (chosen.startswith("cuda") and backend == "mlx"):
        return device
    return chosen


def check_device(device: str, backend: str, *, component: str) -> None:
    """Fail at construction when an explicit torch GPU device is not there (torch is imported only then)."""
    if backend == "mlx" or not device.startswith(("cuda", "mps")):
        return
    from ..backends.devices import missing_torch_device

    problem = missing_torch_device(device)
    if problem is not None:
        raise ConfigError(f"privacy_filter '{component}': {problem}; use device 'cpu' or 'auto'")


def model_key(model: str, *, revision: Optional[str], backend: str, device: str, dtype: str,
              options: Dict[str, Any]) -> Tuple[Any, ...]:
    """What makes two loaded models the same: where the files are, the runtime and how it loads them."""
    path = Path(os.path.expanduser(model))
    where = str(path.resolve()) if path.exists() else model
    return (where, revision if not path.exists() else None, backend, device, dtype,
            tuple(sorted((k, repr(v)) for k, v in options.items())))


def shared_backend(model: str, *, revision: Optional[str], backend: str, device: str, dtype: str,
                   **options: Any) -> Any:
    """The loaded backend for these settings: loaded once, shared while any component holds it."""
    from ..backends import load_backend, select_backend

    name = select_backend(backend)
    key = model_key(model, revision=revision, backend=name, device=device, dtype=dtype, options=options)
    with _LOCK:  # two components initialising at once must not load the model twice
        loaded = _MODELS.get(key)
        if loaded is None:
            loaded = load_backend(model, revision=revision, backend=name, device=device, dtype=dtype, **options)
            _MODELS[key] = loaded
    return loaded


DISTRIBUTION = "spacy-privfilter"


def declare_requirements(meta: Dict[str, Any], *, backend: str, model: str) -> None:
    """Put this package, with the runtime extra the component needs, into ``meta["requirements"]``.

    ``spacy package`` keeps a requirement already in the meta (it only adds packages that are not there), so a
    packaged pipeline installs its runtime too (``spacy-privfilter[torch]``) instead of failing on its first doc.
    """
    from packaging.requirements import Requirement
    from spacy.util import get_minor_version_range

    from .. import __version__

    extras = {"mlx" if backend == "mlx" else "torch"}
    if model.lower().endswith(".gguf") or (Path(model).is_dir() and any(Path(model).glob("*.gguf"))):
        extras.add("gguf")
    kept = []
    for text in meta.get("requirements") or []:
        requirement = Requirement(text)
        if requirement.name == DISTRIBUTION:
            extras |= set(requirement.extras)
        else:
            kept.append(text)
    version = get_minor_version_range(__version__) if "+" not in __version__ else ""
    meta["requirements"] = kept + [f"{DISTRIBUTION}[{','.join(sorted(extras))}]{version}"]
