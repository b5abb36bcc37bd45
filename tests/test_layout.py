"""The package's shape: no import cycles, small modules, frameworks only in their own package, no import-time
side effects. Read from the source with ``ast``, so a lazy import inside a function counts too."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "spacy_privfilter"
MAX_LINES = 400


def modules() -> dict[str, Path]:
    """``{"detector": path, "pipeline": path/__init__.py, "pipeline.settings": ...}`` (names below the package)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path) -> list[tuple[str, bool]]:
    """(absolute module name, is a package module) of every import in the file, TYPE_CHECKING blocks excluded."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {id(n) for node in ast.walk(tree)
               if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
               for child in node.body for n in ast.walk(child)}
    here = ["spacy_privfilter", *name.split(".")] if name else ["spacy_privfilter"]
    package = here if path.name == "__init__.py" else here[:-1]
    out = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            out += [(alias.name, alias.name.startswith("spacy_privfilter")) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            local = bool(node.level) or target.startswith("spacy_privfilter")
            out += [(f"{target}.{alias.name}", local) for alias in node.names] + [(target, local)]
    return out


def dependency_graph() -> dict[str, set[str]]:
    known = modules()
    graph = {}
    for name, path in known.items():
        deps = set()
        for target, local in imports(name, path):
            short = target.removeprefix("spacy_privfilter").lstrip(".")
            # A submodule's own parent package is imported before it anyway: not an edge of a cycle.
            if local and short in known and short != name and not name.startswith(short + "."):
                deps.add(short)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert cycles(dependency_graph()) == []


def test_no_module_over_the_line_limit():
    long = {name: n for name, path in modules().items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_frameworks_only_in_their_own_package():
    wrong = set()
    for name, path in modules().items():
        for target, _ in imports(name, path):
            root = target.split(".")[0]
            # Fine-tuning is torch-only: its torch modules are named training/torch_*.py, and
            # ``import spacy_privfilter.training`` stays framework-free (tests/training checks it).
            trains = name.startswith("training.torch_") and root == "torch"
            if root in ("torch", "mlx") and not name.startswith("backends") and not trains:
                wrong.add((name, root))
            if root in ("spacy", "thinc", "srsly") and not name.startswith("pipeline"):
                wrong.add((name, root))
    assert wrong == set()


def test_redaction_values_is_a_leaf():
    local = {t for t, is_local in imports("redaction.values", modules()["redaction.values"]) if is_local}
    assert local <= {"spacy_privfilter.errors", "spacy_privfilter.errors.ConfigError"}


def test_importing_every_module_changes_no_process_state():
    code = textwrap.dedent("""
        import json, logging, os, pkgutil, signal, sys, threading, warnings, importlib

        def state():
            return {"env": sorted(os.environ.items()), "warnings": [repr(f) for f in warnings.filters],
                    "root_handlers": [repr(h) for h in logging.root.handlers], "root_level": logging.root.level,
                    "signals": {s.name: repr(signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGTERM)},
                    "excepthook": repr(sys.excepthook), "thread_hook": repr(threading.excepthook)}

        # Not ours: imported first so that only this package's own effects are compared.
        import numpy, safetensors, spacy, spacy.language, spacy.pipeline, spacy.scorer, spacy.training, srsly
        import huggingface_hub, tiktoken
        before = state()
        import spacy_privfilter
        for m in pkgutil.walk_packages(spacy_privfilter.__path__, "spacy_privfilter."):
            if not any(f in m.name.rsplit(".", 1)[-1] for f in ("torch", "mlx")):
                importlib.import_module(m.name)
        after = state()
        print(json.dumps({k: [before[k], after[k]] for k in before if before[k] != after[k]}))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    changed = json.loads(result.stdout.strip().splitlines()[-1])
    assert changed == {}


def test_no_public_name_is_also_a_module():
    import spacy_privfilter

    clashes = [name for name in spacy_privfilter.__all__ if name in modules()]
    assert clashes == [] and "redact" in spacy_privfilter.__all__
