"""Fine-tuning a tiny random model on a token-identity task: it learns, saves, and loads everywhere alike."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from spacy_privfilter.backends import load_backend
from spacy_privfilter.backends.torch_backend import TorchBackend
from spacy_privfilter.checkpoint.convert import convert
from spacy_privfilter.checkpoint import inspect_checkpoint
from spacy_privfilter.detector import Detector
from spacy_privfilter.errors import ConfigError
from spacy_privfilter.training import TrainConfig, read_operating_point, train
from spacy_privfilter.training.torch_train import dev_counts, forward_logits, load_for_training
from spacy_privfilter.training.torch_lora import prepare_model

from .synthetic import make_docs, small_tokenizer

HELD_OUT = make_docs(60, seed=99)
TOKENIZER = small_tokenizer()


def _config(mode: str, **changes) -> TrainConfig:
    values = dict(mode=mode, epochs=4, batch_size=16, learning_rate=0.02, lora_rank=4, dev_fraction=0.25,
                  precision="float32", gradient_checkpointing=False, patience=2)
    values.update(changes)
    return TrainConfig(**values)


def _held_out_f1(folder, docs=HELD_OUT) -> float:
    detector = Detector.from_pretrained(str(folder), backend="torch", device="cpu", tokenizer=TOKENIZER)
    return dev_counts(detector.backend.model, TOKENIZER, docs).f1


@pytest.fixture(scope="module")
def head_run(identity_model, tmp_path_factory):
    return train(identity_model, make_docs(160, seed=0), tmp_path_factory.mktemp("head") / "out",
                 config=_config("head"), device="cpu", tokenizer=TOKENIZER)


@pytest.fixture(scope="module")
def lora_run(plain_model, tmp_path_factory):
    return train(plain_model, make_docs(160, seed=0), tmp_path_factory.mktemp("lora") / "out",
                 config=_config("lora"), device="cpu", tokenizer=TOKENIZER)


def test_head_only_learns_from_chance(identity_model, head_run) -> None:
    net, _ = load_for_training(identity_model, device="cpu", mode="head")
    assert dev_counts(net, TOKENIZER, HELD_OUT).f1 < 0.3  # untrained: chance
    losses = [r["loss"] for r in head_run.history]
    assert losses[-1] < 0.5 * losses[0]
    assert _held_out_f1(head_run.path) >= 0.95


def test_lora_learns_what_the_head_alone_cannot(plain_model, lora_run, tmp_path) -> None:
    head = train(plain_model, make_docs(160, seed=0), tmp_path / "head", config=_config("head", calibrate=False),
                 device="cpu", tokenizer=TOKENIZER)
    assert _held_out_f1(head.path) < 0.9  # the random body blurs token identity for a linear head
    assert lora_run.history[-1]["loss"] < 0.5 * lora_run.history[0]["loss"]
    assert _held_out_f1(lora_run.path) >= 0.95


def test_saved_checkpoint_gives_the_trained_logits_in_every_runtime(lora_run, tmp_path) -> None:
    """Adapters merged at save: torch, MLX (also after conversion) and the spaCy component all reproduce the
    in-memory model."""
    ids = np.stack([TOKENIZER.encode(d.text).input_ids[:8] for d in HELD_OUT[:4]])
    mask = np.ones_like(ids, dtype=bool)
    trained = TorchBackend(lora_run.model, lora_run.model.config).logits(ids, mask)
    torch_loaded = load_backend(str(lora_run.path), backend="torch", device="cpu").logits(ids, mask)
    np.testing.assert_allclose(torch_loaded, trained, atol=1e-4, rtol=1e-4)
    pytest.importorskip("mlx.core")
    mlx_loaded = load_backend(str(lora_run.path), backend="mlx").logits(ids, mask)
    np.testing.assert_allclose(np.asarray(mlx_loaded), trained, atol=1e-4, rtol=1e-4)
    converted = convert(lora_run.path, tmp_path / "mlx", to="mlx-bf16")
    bf16 = np.asarray(load_backend(str(converted), backend="mlx").logits(ids, mask))
    assert np.abs(bf16 - trained).max() < 0.5  # bf16 weights: close, not equal
    assert (bf16.argmax(-1) == trained.argmax(-1)).mean() >= 0.95
    spacy = pytest.importorskip("spacy")
    nlp = spacy.blank("en")
    component = nlp.add_pipe("privacy_filter", config={"model": str(lora_run.path), "backend": "torch",
                                                       "device": "cpu"})
    np.testing.assert_allclose(component.detector.backend.logits(ids, mask), trained, atol=1e-4, rtol=1e-4)


def test_dev_calibration_is_saved_with_the_checkpoint(lora_run) -> None:
    assert lora_run.calibration is not None
    point = read_operating_point(lora_run.path)
    assert point == lora_run.calibration.operating_point
    assert inspect_checkpoint(lora_run.path).viterbi_biases == point.biases.as_dict()


def test_a_new_label_is_learned_by_extension(identity_model, tmp_path) -> None:
    old = inspect_checkpoint(identity_model).config.id2label
    docs = make_docs(160, seed=0, pets=True)
    with pytest.raises(ConfigError, match="pet"):
        train(identity_model, docs, tmp_path / "refused", config=_config("head"), device="cpu", tokenizer=TOKENIZER)
    result = train(identity_model, docs, tmp_path / "out", config=_config("head", extend_labels=True),
                   device="cpu", tokenizer=TOKENIZER)
    labels = inspect_checkpoint(result.path).config.id2label
    assert labels == old + ("B-pet", "I-pet", "E-pet", "S-pet")
    detector = Detector.from_pretrained(str(result.path), backend="torch", device="cpu", tokenizer=TOKENIZER)
    held = make_docs(40, seed=98, pets=True)
    found = {(s.start, s.end) for d, spans in zip(held, detector.detect_batch([d.text for d in held]))
             for s in spans if s.label == "pet"}
    gold = {(g.start, g.end) for d in held for g in d.spans if g.label == "pet"}
    assert gold and len(found & gold) >= 0.9 * len(gold)


def test_gradient_checkpointing_gives_the_same_gradients(plain_model) -> None:
    net, _ = load_for_training(plain_model, device="cpu", mode="lora")
    params = prepare_model(net, "lora", rank=4)
    with torch.no_grad():  # non-zero B so that every adapter gets a gradient
        for p in params:
            p.add_(0.01 * torch.randn_like(p))
    ids = torch.as_tensor(TOKENIZER.encode(HELD_OUT[0].text).input_ids[None, :12])
    mask = torch.ones_like(ids, dtype=torch.bool)
    grads = []
    for checkpointing in (False, True):
        for p in params:
            p.grad = None
        forward_logits(net, ids, mask, body_grad=True, checkpointing=checkpointing).square().mean().backward()
        grads.append([p.grad.clone() for p in params])
    for plain, checked in zip(*grads):
        torch.testing.assert_close(checked, plain)


def test_output_folder_must_be_new(identity_model, tmp_path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        train(identity_model, make_docs(10, seed=0), tmp_path / "taken", config=_config("head"), device="cpu",
              tokenizer=TOKENIZER)
    assert (tmp_path / "taken" / "keep.txt").read_text() == "x"


def test_head_feature_cache_changes_nothing_but_speed(identity_model, head_run, tmp_path) -> None:
    uncached = train(identity_model, make_docs(160, seed=0), tmp_path / "out",
                     config=_config("head", cache_features=False, calibrate=False), device="cpu", tokenizer=TOKENIZER)
    np.testing.assert_allclose([r["loss"] for r in uncached.history], [r["loss"] for r in head_run.history],
                               rtol=1e-5)
