"""Tiny random checkpoints for the training tests, written once per session."""
from __future__ import annotations

from pathlib import Path

import pytest

from spacy_privfilter.checkpoint import save_checkpoint
from spacy_privfilter.testing import random_state_dict, tiny_config

from .synthetic import VOCAB_SIZE


def _checkpoint(folder: Path, embedding_scale: float) -> Path:
    config = tiny_config(vocab_size=VOCAB_SIZE)
    weights = random_state_dict(config, seed=3)
    weights["model.embed_tokens.weight"] *= embedding_scale
    return save_checkpoint(weights, config, folder, format="hf")


@pytest.fixture(scope="session")
def plain_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random model: attention and experts mix neighbours into each token's features, so a linear head
    alone cannot learn token identity well (dev F1 ~0.75); the body has to adapt."""
    return _checkpoint(tmp_path_factory.mktemp("plain"), 1.0)


@pytest.fixture(scope="session")
def identity_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same with a 5x embedding: each token's own embedding dominates its features, so the head can learn."""
    return _checkpoint(tmp_path_factory.mktemp("identity"), 5.0)


@pytest.fixture(autouse=True, scope="package")
def one_torch_thread():
    """The test models are tiny: on a busy machine, waking a second torch thread costs more than the work
    (measured: a head-only test run 24 s with two threads, 6 s with one)."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
