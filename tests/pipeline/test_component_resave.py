"""Saving a pipeline over an older one: the new model is the one that loads; links out of a model folder are
never copied into a saved pipeline."""
from __future__ import annotations

import pytest
import spacy

from spacy_privfilter.checkpoint.discover import inspect_checkpoint
from spacy_privfilter.errors import CheckpointError
from spacy_privfilter.testing import bioes_labels, tiny_config, write_random_checkpoint

pytest.importorskip("torch")

LABELS = bioes_labels(("first_name", "last_name", "email"))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    config = tiny_config(id2label=LABELS)
    return {"mlx": write_random_checkpoint(root / "mlx", config, format="mlx-bf16", seed=1),
            "hf": write_random_checkpoint(root / "hf", config, format="hf", seed=2)}


def save(model, path):
    nlp = spacy.blank("en")
    nlp.add_pipe("privacy_filter", config={"model": str(model), "backend": "torch"})
    nlp.to_disk(path)


def test_resaving_over_a_pipeline_with_another_model_format_loads_the_new_model(tmp_path, models):
    path = tmp_path / "pipe"
    save(models["mlx"], path)
    assert (path / "privacy_filter" / "model" / "openmed-mlx.json").is_file()
    save(models["hf"], path)
    model_dir = path / "privacy_filter" / "model"
    cfg = spacy.util.srsly.read_json(path / "privacy_filter" / "cfg.json")
    assert sorted(p.name for p in model_dir.iterdir()) == sorted(cfg["files"])
    loaded = spacy.load(path).get_pipe("privacy_filter")
    assert inspect_checkpoint(loaded._model_folder()).format == "hf"


def test_loading_reads_only_the_files_the_config_lists(tmp_path, models):
    path = tmp_path / "pipe"
    save(models["hf"], path)
    # A stale manifest left by an older save (or put there by hand) must not turn the folder into an MLX model.
    (path / "privacy_filter" / "model" / "openmed-mlx.json").write_text("{}")
    loaded = spacy.load(path).get_pipe("privacy_filter")
    folder = loaded._model_folder()
    assert not (folder / "openmed-mlx.json").exists()
    assert inspect_checkpoint(folder).format == "hf"
    assert list(spacy.load(path).pipe(["Mail jane@example.org"]))  # it runs


def test_a_symlink_out_of_the_model_folder_is_not_copied_into_a_saved_pipeline(tmp_path, models):
    import shutil

    folder = tmp_path / "linked"
    shutil.copytree(models["hf"], folder)
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-MARKER")
    (folder / "viterbi_calibration.json").symlink_to(secret)
    with pytest.raises(CheckpointError, match="symbolic link"):
        save(folder, tmp_path / "pipe")
    assert "SECRET-MARKER" not in "".join(p.read_text(errors="ignore") for p in tmp_path.joinpath("pipe").rglob("*")
                                          if p.is_file())
    # Links inside the folder (like the Hugging Face cache's snapshot -> blob links) are fine.
    (folder / "viterbi_calibration.json").unlink()
    (folder / "config.json").rename(folder / "real-config.json")
    (folder / "config.json").symlink_to(folder / "real-config.json")
    save(folder, tmp_path / "pipe2")
    assert (tmp_path / "pipe2" / "privacy_filter" / "model" / "config.json").is_file()


@pytest.mark.parametrize("blob", [b"\xc1garbage", [1, 2], {"cfg": 5},
                                  {"cfg": {"version": 1, "save_model": "reference", "model": 7}},
                                  {"cfg": {"version": 1, "save_model": "copy", "model": "m", "files": []},
                                   "files": {"config.json": "not bytes"}}])
def test_a_damaged_from_bytes_blob_is_a_checkpoint_error(blob):
    import srsly

    data = blob if isinstance(blob, bytes) else srsly.msgpack_dumps(blob)
    component = spacy.blank("en").add_pipe("privacy_filter")
    with pytest.raises(CheckpointError, match="saved component 'privacy_filter'"):
        component.from_bytes(data)
