"""The built wheel: PEP 561 ``py.typed`` marker, every subpackage, the native kernel source, the spaCy entry
points."""
from __future__ import annotations

import importlib.resources
import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_py_typed_is_package_data_and_installed():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["spacy_privfilter"]
    assert importlib.resources.files("spacy_privfilter").joinpath("py.typed").is_file()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    if importlib.util.find_spec("setuptools") is None:  # the build backend; fresh venvs of Python >= 3.12 lack it
        pytest.skip("setuptools is not installed, so no wheel can be built without network")
    src = tmp_path_factory.mktemp("src")  # a copy, so the build leaves nothing in the checkout
    shutil.copytree(ROOT / "spacy_privfilter", src / "spacy_privfilter",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                             "-q", "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    with zipfile.ZipFile(next(out.glob("*.whl"))) as archive:
        yield archive


def test_wheel_ships_py_typed_and_every_module(wheel):
    names = set(wheel.namelist())
    assert "spacy_privfilter/py.typed" in names
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "spacy_privfilter").rglob("*.py")}
    assert sources <= names
    from spacy_privfilter import decode
    from spacy_privfilter.backends import native

    kernel_files = {p.relative_to(ROOT).as_posix() for p in (*native.SOURCES, *native.HEADERS, decode._SOURCE)}
    assert kernel_files <= names  # every file the compiler reads on the user's machine, headers included


def test_wheel_registers_the_spacy_entry_points(wheel):
    entry_points = next(n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt"))
    text = wheel.read(entry_points).decode()
    for line in ("privacy_filter = spacy_privfilter.pipeline.privacy_filter:make_privacy_filter",
                 "privacy_redactor = spacy_privfilter.pipeline.privacy_redactor:make_privacy_redactor",
                 "spacy-privfilter = spacy_privfilter.cli.parser:main"):
        assert line in text

