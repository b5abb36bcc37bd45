"""``import spacy_privfilter`` needs neither torch nor mlx; a missing runtime names its pip install."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

# Run in a fresh interpreter where importing torch or mlx raises ImportError, as on a machine without them.
BLOCKED_PRELUDE = textwrap.dedent("""
    import importlib.abc, sys

    class BlockFrameworks(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "mlx"):
                raise ImportError(f"{name} is blocked for this test")
            return None

    sys.meta_path.insert(0, BlockFrameworks())
""")

IMPORT_ALL = textwrap.dedent("""
    import importlib, json, pkgutil, sys
    import spacy_privfilter
    # Every module that is not itself a framework runtime must import too.
    names = [m.name for m in pkgutil.walk_packages(spacy_privfilter.__path__, "spacy_privfilter.")
             if not any(f in m.name.rsplit(".", 1)[-1] for f in ("torch", "mlx"))]
    failed = {}
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:
            failed[name] = f"{type(exc).__name__}: {exc}"
    try:
        import torch  # noqa: F401
        blocked = False
    except ImportError:
        blocked = True
    print(json.dumps({"blocked": blocked, "modules": names, "failed": failed, "spacy": "spacy" in sys.modules,
                      "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "mlx"))}))
""")


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_with_torch_and_mlx_blocked():
    result = run_python(BLOCKED_PRELUDE + IMPORT_ALL)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["blocked"] and "spacy_privfilter.detector" in report["modules"]
    assert report["failed"] == {}
    assert report["loaded"] == []


def test_core_modules_do_not_load_frameworks():
    """Without blocking: the framework-free core (no spaCy) must not pull torch or mlx in."""
    code = textwrap.dedent("""
        import json, sys
        import spacy_privfilter, spacy_privfilter.detector, spacy_privfilter.backends
        import spacy_privfilter.backends.fake
        print(json.dumps({"spacy": "spacy" in sys.modules,
                          "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "mlx"))}))
    """)
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    if report["spacy"]:
        # spaCy's thinc imports torch by itself whenever it is installed; nothing this package can avoid.
        return
    assert report["loaded"] == []


def test_missing_runtime_names_the_pip_install(tmp_path):
    code = BLOCKED_PRELUDE + textwrap.dedent(f"""
        import json
        from spacy_privfilter.errors import BackendUnavailableError
        from spacy_privfilter.backends import select_backend
        from spacy_privfilter.detector import Detector
        messages = {{}}
        calls = [("torch", lambda: select_backend("torch")), ("mlx", lambda: select_backend("mlx")),
                 ("auto", lambda: select_backend("auto")),
                 ("from_pretrained", lambda: Detector.from_pretrained({str(tmp_path)!r}, backend="torch"))]
        for name, call in calls:
            try:
                call()
                messages[name] = None
            except BackendUnavailableError as exc:
                messages[name] = str(exc)
        print(json.dumps(messages))
    """)
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    messages = json.loads(result.stdout.strip().splitlines()[-1])
    cpu = "pip install torch --index-url https://download.pytorch.org/whl/cpu"
    assert "Fix: pip install torch" in messages["torch"] and cpu in messages["torch"]
    assert "pip install" in messages["mlx"] and "mlx" in messages["mlx"]
    assert "Fix: pip install torch" in messages["auto"] and cpu in messages["auto"]
    assert "Fix: pip install torch" in messages["from_pretrained"]
