"""privacy_filter save/load with a tiny real checkpoint: to_disk -> fresh-process spacy.load offline (which
also checks the factory and displaCy entry points in that fresh interpreter), bytes, Hub-reference mode."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import spacy
import srsly

from component_fakes import FixedDetector, make_nlp, spans_of
from spacy_privfilter.errors import CheckpointError, ConfigError
from spacy_privfilter.checkpoint.files import list_model_files
from spacy_privfilter.tokens import O200K_SHA256

pytest.importorskip("torch")

TEXTS = ["Hello Jane Doe, mail jane.doe@example.org or call 555 0100 today.",
         "", "Ana López vive en Calle Mayor 5, Madrid 🙂",
         "Dear Dr Amir Patel, the MRN 68779642 belongs to Clarence Cobb. " * 4]


@pytest.fixture(scope="module")
def tiny_model(tiny_checkpoint):
    # A large classifier scale gives confident random logits, hence plenty of spans to compare.
    return tiny_checkpoint(("first_name", "last_name", "email"), seed=3, classifier_scale=4.0)


def build(model, **config):
    nlp = spacy.blank("en")
    nlp.add_pipe("privacy_filter", config={"model": str(model), "backend": "torch", "max_batch_tokens": 4096,
                                           **config})
    return nlp


def annotations(nlp, texts=TEXTS):
    return [{"spans": [list(s) for s in spans_of(doc)],
             "scores": [round(float(x), 5) for x in doc.spans["pii"].attrs["scores"]],
             "ents": [[e.label_, e.start_char, e.end_char] for e in doc.ents]} for doc in nlp.pipe(texts)]


CHILD = textwrap.dedent("""
    import json, sys
    import spacy
    # Entry points: the factory and the displaCy colours resolve with no import of spacy_privfilter.
    blank = spacy.blank("en")
    component = blank.add_pipe("privacy_filter", config={"spans_key": "phi"})
    checks = {"class": type(component).__name__, "key": component.settings.spans_key,
              "model_loaded": "spacy_privfilter.backends.torch_backend" in sys.modules,
              "colors": len(spacy.util.registry.displacy_colors.get_all().get("privacy_filter", dict)())}
    nlp = spacy.load(sys.argv[1])
    out = []
    for doc in nlp.pipe(json.loads(sys.argv[2])):
        out.append({"spans": [[s.label_, s.start_char, s.end_char] for s in doc.spans["pii"]],
                    "scores": [round(float(x), 5) for x in doc.spans["pii"].attrs["scores"]],
                    "ents": [[e.label_, e.start_char, e.end_char] for e in doc.ents]})
    print(json.dumps({"checks": checks, "docs": out}))
""")


def run_fresh(args, *, env_extra, code=CHILD):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TIKTOKEN"))}
    env.update(env_extra)
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_to_disk_then_fresh_process_offline_load(tiny_model, tmp_path):
    nlp = build(tiny_model, set_ents=True, label_map={"first_name": "PERSON", "last_name": "PERSON"})
    expected = annotations(nlp)
    assert sum(len(doc["spans"]) for doc in expected) > 3
    nlp.to_disk(tmp_path / "pipeline")
    stored = tmp_path / "pipeline" / "privacy_filter" / "model"
    assert sorted(p.name for p in stored.iterdir()) == \
        ["config.json", "model.safetensors", "o200k_base.tiktoken"]
    # The stored tokenizer file is the exact o200k_base file.
    import hashlib
    assert hashlib.sha256((stored / "o200k_base.tiktoken").read_bytes()).hexdigest() == O200K_SHA256
    # Offline, with an empty tiktoken cache and the original model folder gone from view.
    empty_cache = tmp_path / "empty_cache"
    empty_cache.mkdir()
    moved = tiny_model.with_name("hf_moved")
    tiny_model.rename(moved)
    try:
        got = run_fresh([str(tmp_path / "pipeline"), json.dumps(TEXTS)],
                        env_extra={"HF_HUB_OFFLINE": "1", "TIKTOKEN_CACHE_DIR": str(empty_cache),
                                   "HF_HOME": str(tmp_path / "no_hf_home")})
    finally:
        moved.rename(tiny_model)
    assert got["docs"] == expected
    assert got["checks"] == {"class": "PrivacyFilter", "key": "phi", "model_loaded": False, "colors": 62}


def test_reference_mode_stores_no_weights(tiny_model, tmp_path):
    nlp = build(tiny_model, save_model="reference")
    expected = annotations(nlp)
    nlp.to_disk(tmp_path / "pipeline")
    component_dir = tmp_path / "pipeline" / "privacy_filter"
    assert not (component_dir / "model").exists()
    cfg = srsly.read_json(component_dir / "cfg.json")
    assert cfg["model"] == str(tiny_model) and cfg["save_model"] == "reference" and cfg["files"] == []
    assert annotations(spacy.load(tmp_path / "pipeline")) == expected


def test_to_bytes_from_bytes(tiny_model):
    nlp = build(tiny_model)
    expected = annotations(nlp)
    data = nlp.to_bytes()
    other = build("does/not-exist")  # the stored files win over the configured model
    other.from_bytes(data)
    assert annotations(other) == expected
    component = other.get_pipe("privacy_filter")
    assert sorted(p.name for p in component._model_path.iterdir()) == ["config.json", "model.safetensors"]


def test_bytes_reference_mode(tiny_model):
    nlp = build(tiny_model, save_model="reference")
    other = build(tiny_model, save_model="reference")
    other.from_bytes(nlp.to_bytes())
    assert other.get_pipe("privacy_filter")._model_path is None
    assert annotations(other) == annotations(nlp)


def test_copy_mode_with_injected_detector_is_a_clear_error(tmp_path):
    nlp = make_nlp(FixedDetector())
    with pytest.raises(ConfigError, match="save_model='reference'"):
        nlp.to_disk(tmp_path / "pipeline")
    nlp = make_nlp(FixedDetector(), save_model="reference")
    nlp.to_disk(tmp_path / "pipeline")
    assert spacy.load(tmp_path / "pipeline").get_pipe("privacy_filter").settings.save_model == "reference"


def test_missing_stored_file_is_named(tiny_model, tmp_path):
    build(tiny_model).to_disk(tmp_path / "pipeline")
    (tmp_path / "pipeline" / "privacy_filter" / "model" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors"):
        spacy.load(tmp_path / "pipeline")


def test_model_files_of_an_mlx_artifact(tmp_path, tiny_checkpoint):
    folder = shutil.copytree(tiny_checkpoint(("email",), format="mlx-8bit", vocab_size=256), tmp_path / "mlx")
    (folder / "tokenizer.json").write_text("{}")  # HF tokenizer files are not needed (tiktoken is used)
    (folder / "viterbi_calibration.json").write_text("{}")
    names = [p.name for p in list_model_files(folder)]
    assert names == ["config.json", "id2label.json", "openmed-mlx.json", "viterbi_calibration.json",
                     "weights.safetensors"]
    with pytest.raises(CheckpointError, match="safetensors"):
        list_model_files(tmp_path)


def test_scores_are_probabilities(tiny_model):
    scores = np.concatenate([np.asarray(d["scores"]) for d in annotations(build(tiny_model))])
    assert scores.size and (scores > 0).all() and (scores <= 1).all()


def test_pickle_of_a_loaded_pipeline_carries_no_weights(tiny_model):
    import pickle

    nlp = build(tiny_model)
    expected = annotations(nlp)  # loads the model
    data = pickle.dumps(nlp)
    weights = (tiny_model / "model.safetensors").stat().st_size
    assert len(data) < weights / 10  # the receiving process reloads the model from its folder
    assert annotations(pickle.loads(data)) == expected
