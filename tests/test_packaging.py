"""Packaging: install lines that work from a clone or a wheel, __version__ from metadata, a runtime in the
requirements of a ``spacy package``d pipeline; slow: a wheel and a packaged pipeline in a fresh venv."""
from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import spacy

import spacy_privfilter
from spacy_privfilter._compat import INSTALL_HINTS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CPU_TORCH = "pip install torch --index-url https://download.pytorch.org/whl/cpu"


def test_version_comes_from_the_installed_metadata():
    assert spacy_privfilter.__version__ == importlib.metadata.version("spacy-privfilter")


def test_no_install_line_names_an_index_package_that_does_not_exist():
    # spacy-privfilter is installed from a clone, a wheel or a git URL; no index serves "spacy-privfilter[...]".
    sources = [README] + [p.read_text(encoding="utf-8") for p in (ROOT / "spacy_privfilter").rglob("*.py")] + [
        p.read_text(encoding="utf-8") for p in (ROOT / "examples").glob("*.py")]
    for text in sources:
        assert not re.search(r"pip install [\"']?spacy-privfilter\[[a-z,]+\](?! @)", text)
    assert 'pip install ".[torch]"' in README and CPU_TORCH in README
    assert "@ git+" in README and ".whl[torch]" in README
    assert CPU_TORCH in INSTALL_HINTS["torch"]


def test_a_pipeline_declares_its_runtime_for_spacy_package(tmp_path):
    nlp = spacy.blank("en")
    nlp.add_pipe("privacy_filter", config={"save_model": "reference"})
    nlp.to_disk(tmp_path / "pipe")
    meta = json.loads((tmp_path / "pipe" / "meta.json").read_text())
    ours = [r for r in meta["requirements"] if r.startswith("spacy-privfilter")]
    assert ours == [f"spacy-privfilter[torch]{spacy.util.get_minor_version_range(spacy_privfilter.__version__)}"]
    from spacy.cli.package import get_meta

    packaged = get_meta(tmp_path / "pipe", {})  # what `spacy package` writes into the package's setup
    assert [r for r in packaged["requirements"] if r.startswith("spacy-privfilter")] == ours


# -- slow: a fresh virtual environment ----------------------------------------------------------------------------
def _run(args, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=1800, **kwargs)
    assert result.returncode == 0, (args, result.stdout[-2000:], result.stderr[-3000:])
    return result


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory):
    root = tmp_path_factory.mktemp("venv")
    dist = root / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", dist, ROOT])
    wheel = next(dist.glob("spacy_privfilter-*.whl"))
    with zipfile.ZipFile(wheel) as archive:  # PEP 561 marker and the GGUF reader ship in the wheel
        assert {"spacy_privfilter/py.typed", "spacy_privfilter/checkpoint/gguf.py",
                "spacy_privfilter/backends/kernels/experts_avx512.cpp",
                "spacy_privfilter/backends/kernels/simd.h"} <= set(archive.namelist())
    _run([sys.executable, "-m", "venv", root / "env"])
    python = root / "env" / "bin" / "python"
    _run([python, "-m", "pip", "install", "-q", "torch==2.13.0"])  # the CPU build, before the extra asks for torch
    _run([python, "-m", "pip", "install", "-q", "--find-links", dist, f"{wheel}[torch]"])
    return python, dist


def _tiny_checkpoint(folder: Path) -> Path:
    from spacy_privfilter.testing import tiny_config, write_random_checkpoint

    return write_random_checkpoint(folder, tiny_config(), format="hf", dtype="bfloat16", seed=1)


@pytest.mark.slow
def test_wheel_runs_the_readme_example_in_a_fresh_venv(fresh_venv, tmp_path):
    python, _ = fresh_venv
    block = README.split("## Python", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    assert block.count('nlp.add_pipe("privacy_filter")') == 1
    model = _tiny_checkpoint(tmp_path / "ckpt")
    script = block.replace('nlp.add_pipe("privacy_filter")', f'nlp.add_pipe("privacy_filter", config={{"model": {str(model)!r}}})')
    script += "\nprint(type(doc._.redacted_text).__name__, isinstance(doc._.redactions, list))\n"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = _run([python, "-c", script], env=env, cwd=tmp_path)
    assert out.stdout.split()[-2:] == ["str", "True"]


@pytest.mark.slow
def test_a_spacy_packaged_pipeline_installs_and_runs_in_a_fresh_venv(fresh_venv, tmp_path):
    python, dist = fresh_venv
    nlp = spacy.blank("en")
    nlp.add_pipe("privacy_filter", config={"model": str(_tiny_checkpoint(tmp_path / "ckpt"))})
    nlp.add_pipe("privacy_redactor")
    nlp.meta["name"], nlp.meta["version"] = "pii_tiny", "0.0.1"
    nlp.to_disk(tmp_path / "pipe")
    (tmp_path / "pkg").mkdir()
    _run([sys.executable, "-m", "spacy", "package", tmp_path / "pipe", tmp_path / "pkg"])  # an sdist
    sdist = next((tmp_path / "pkg").rglob("en_pii_tiny-*.tar.gz"))
    _run([python, "-m", "pip", "install", "-q", "--find-links", dist, sdist])
    code = ("import spacy; nlp = spacy.load('en_pii_tiny'); doc = nlp('Call Jane at 555-201-7731.');"
            "print(type(doc._.redacted_text).__name__, sorted(nlp.pipe_labels['privacy_filter']))")
    out = _run([python, "-c", code], env=dict(os.environ, HF_HUB_OFFLINE="1"), cwd=tmp_path)
    assert out.stdout.split()[0] == "str" and "private_email" in out.stdout


@pytest.mark.slow
def test_the_installed_wheel_builds_the_native_kernels_where_the_checkout_does(fresh_venv, tmp_path):
    from spacy_privfilter.backends import native

    if not native.describe()["available"]:
        pytest.skip(f"the native kernels do not run here: {native.unavailable_reason()}")
    python, _ = fresh_venv
    env = dict(os.environ, SPACY_PRIVFILTER_KERNEL_CACHE=str(tmp_path / "cache"))  # built from the wheel's sources
    code = "from spacy_privfilter.backends import native; d = native.describe(); print(d['available'], d['reason'])"
    out = _run([python, "-c", code], env=env, cwd=tmp_path)
    assert out.stdout.split()[0] == "True", out.stdout
