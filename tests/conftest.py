"""Shared test setup: offline tokenizer cache, shared data location, the slow marker, tiny checkpoints."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TIKTOKEN_CACHE = SHARED / "tokenizers" / "tiktoken_cache"
if TIKTOKEN_CACHE.is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(TIKTOKEN_CACHE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA_DIR = SHARED / "data"
DATA_FILES = sorted(DATA_DIR.glob("*.jsonl")) if DATA_DIR.is_dir() else []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data_files() -> list[Path]:
    if not DATA_FILES:
        pytest.skip("../shared/data is not present")
    return DATA_FILES


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory of tiny random checkpoints in the real file formats, written once per set of arguments.

    ``tiny_checkpoint(labels, *, format="hf", seed=0, classifier_scale=1.0, dtype="float32", **config)``
    returns the folder of ``write_random_checkpoint(tiny_config(id2label=bioes_labels(labels), **config), ...)``.
    The folder is shared by every test asking for the same arguments: copy it before changing its files.
    """
    from spacy_privfilter.testing import bioes_labels, tiny_config, write_random_checkpoint

    made: dict[tuple, Path] = {}

    def make(labels: tuple[str, ...] = ("private_email", "private_person"), *, format: str = "hf", seed: int = 0,
             classifier_scale: float = 1.0, dtype: str = "float32", **config: Any) -> Path:
        key = (tuple(labels), format, seed, classifier_scale, dtype, tuple(sorted(config.items())))
        if key not in made:
            folder = tmp_path_factory.mktemp("tiny_checkpoint") / format
            made[key] = write_random_checkpoint(folder, tiny_config(id2label=bioes_labels(tuple(labels)), **config),
                                                format=format, seed=seed, classifier_scale=classifier_scale,
                                                dtype=dtype)
        return made[key]

    return make
