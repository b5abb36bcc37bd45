"""The checkpoint package is numpy and names only: it inspects, loads, writes and converts without torch or mlx."""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "spacy_privfilter"

CONVERT_WITHOUT_FRAMEWORKS = textwrap.dedent("""
    import sys
    sys.modules["torch"] = sys.modules["mlx"] = None  # any import of them now raises ImportError
    from spacy_privfilter.checkpoint import inspect_checkpoint, load_state_dict
    from spacy_privfilter.checkpoint.convert import convert
    from spacy_privfilter.testing import tiny_config, write_random_checkpoint
    src = write_random_checkpoint(sys.argv[1] + "/hf", tiny_config(vocab_size=300), format="hf", seed=1)
    out = convert(src, sys.argv[1] + "/q8", to="mlx-8bit")
    info = inspect_checkpoint(out)
    weights = load_state_dict(info)
    print(info.format, info.quantization.bits, len(weights))
""")


def test_convert_runs_with_torch_and_mlx_unimportable(tmp_path):
    done = subprocess.run([sys.executable, "-c", CONVERT_WITHOUT_FRAMEWORKS, str(tmp_path)], capture_output=True,
                          text=True, timeout=300, cwd=PACKAGE.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    # 2 layers x 17 tensors + embedding, final norm and the head's weight and bias
    assert done.stdout.split() == ["mlx", "8", str(2 * 17 + 4)]


def test_frameworks_are_imported_only_under_backends():
    """No module of the checkpoint package or the config imports torch or mlx, not even inside a function."""
    offenders = []
    for path in [*sorted((PACKAGE / "checkpoint").glob("*.py")), PACKAGE / "config.py"]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            offenders += [f"{path.name}: {name}" for name in names if name.split(".")[0] in ("torch", "mlx")]
    assert offenders == []
