"""``spacy-privfilter calibrate`` and ``train`` end to end on a tiny model with the real tokenizer."""
from __future__ import annotations

import json

import pytest

from spacy_privfilter.cli.parser import main
from spacy_privfilter.labels import TransitionBiases
from spacy_privfilter.testing import tiny_config, write_random_checkpoint
from spacy_privfilter.training import read_operating_point

from .synthetic import make_docs


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_random_checkpoint(tmp_path_factory.mktemp("cli") / "model", tiny_config(), format="hf",
                                   classifier_scale=3.0)


@pytest.fixture(scope="module")
def gold(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "gold.jsonl"
    records = [{"text": d.text, "spans": [s._asdict() for s in d.spans], "source": "synthetic"}
               for d in make_docs(48, seed=4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_calibrate_writes_a_file_the_component_loads(model, gold, tmp_path, capsys) -> None:
    out = tmp_path / "cal.json"
    code = main(["calibrate", str(gold), "-o", str(out), "--model", str(model), "--backend", "torch",
                 "--device", "cpu", "--json", "-q"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    point = read_operating_point(out)
    assert report["operating_points"]["default"]["biases"] == point.biases.as_dict()
    assert report["heldout_after"]["overall"]["n_gold"] > 0
    spacy = pytest.importorskip("spacy")
    nlp = spacy.blank("en")
    component = nlp.add_pipe("privacy_filter", config={"model": str(model), "calibration": str(out),
                                                       "backend": "torch", "device": "cpu"})
    assert TransitionBiases.from_any(component.detector.biases) == point.biases
    for label, threshold in point.label_thresholds.items():
        assert component.settings.label_thresholds[label] == threshold


def test_calibrate_refuses_to_overwrite_its_input(model, gold, capsys) -> None:
    assert main(["calibrate", str(gold), "-o", str(gold), "--model", str(model)]) == 2
    assert "overwrite" in capsys.readouterr().err


def test_train_head_writes_a_checkpoint(model, gold, tmp_path, capsys) -> None:
    out = tmp_path / "tuned"
    code = main(["train", str(gold), "--model", str(model), "-o", str(out), "--mode", "head", "--epochs", "1",
                 "--device", "cpu", "--dev-fraction", "0.3", "--precision", "float32", "-q"])
    assert code == 0
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert "saved" in capsys.readouterr().out
    assert main(["train", str(gold), "--model", str(model), "-o", str(out), "--mode", "head"]) == 2


def test_train_names_unknown_labels(model, tmp_path, capsys) -> None:
    path = tmp_path / "pets.jsonl"
    path.write_text("".join(json.dumps({"text": d.text, "spans": [s._asdict() for s in d.spans]}) + "\n"
                            for d in make_docs(10, seed=1, pets=True)), encoding="utf-8")
    assert main(["train", str(path), "--model", str(model), "-o", str(tmp_path / "o"), "--device", "cpu"]) == 2
    assert "pet" in capsys.readouterr().err and not (tmp_path / "o").exists()
