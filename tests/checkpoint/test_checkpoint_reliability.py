"""Crafted safetensors headers and config.json files give a CheckpointError naming the file and field, never a
raw TypeError/OverflowError/KeyError; Hub failures say which cause it was (offline mode, network, repo, auth)."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from spacy_privfilter.checkpoint import inspect_checkpoint, resolve_model_path
from spacy_privfilter.checkpoint.safetensors_io import read_header
from spacy_privfilter.errors import CheckpointError, ModelNotFoundError
from spacy_privfilter.testing import tiny_config, write_random_checkpoint


def safetensors(path: Path, header, data: bytes = b"\x00" * 64) -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


ENTRY = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
BAD_HEADERS = {
    "string offsets": {"w": {**ENTRY, "data_offsets": ["0", "16"]}},
    "list dtype": {"w": {**ENTRY, "dtype": ["F32"]}},
    "huge dims": {"w": {**ENTRY, "shape": [2 ** 62, 2 ** 62]}},
    "negative dims": {"w": {**ENTRY, "shape": [-2, -2]}},
    "float dims": {"w": {**ENTRY, "shape": [2.0, 2]}},
    "bool offsets": {"w": {**ENTRY, "data_offsets": [False, 16]}},
    "offsets past the data": {"w": {"dtype": "F32", "shape": [100], "data_offsets": [0, 400]}},
    "overlapping tensors": {"a": ENTRY, "b": {**ENTRY, "data_offsets": [8, 24]}},
    "entry not an object": {"w": [1, 2, 3]},
    "missing field": {"w": {"dtype": "F32", "shape": [2]}},
    "metadata not strings": {"__metadata__": {"format": 5}, "w": ENTRY},
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
    "huge number": b'{"w": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 16]}}',
}


@pytest.mark.parametrize("case", sorted(BAD_HEADERS))
def test_malformed_headers_are_checkpoint_errors_naming_the_file(tmp_path, case):
    path = safetensors(tmp_path / "model.safetensors", BAD_HEADERS[case])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        read_header(path)


def test_a_valid_header_still_reads(tmp_path):
    header = read_header(safetensors(tmp_path / "ok.safetensors", {"a": ENTRY, "b": {**ENTRY, "data_offsets": [16, 32]},
                                                                  "__metadata__": {"format": "pt"}}))
    assert header.tensors["b"].shape == (2, 2) and header.metadata == {"format": "pt"}


@pytest.mark.parametrize("field, value", [("hidden_size", "big"), ("num_hidden_layers", [2]),
                                          ("swiglu_limit", {"x": 1}), ("sliding_window", None),
                                          ("pad_token_id", 1e400)])
def test_wrong_types_in_config_json_name_the_file_and_field(tmp_path, field, value):
    folder = write_random_checkpoint(tmp_path / "ckpt", tiny_config(), format="hf")
    config = json.loads((folder / "config.json").read_text())
    config[field] = value
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=rf"config.json in 'ckpt'.*'{field}'"):
        inspect_checkpoint(folder)


def test_id2label_of_the_wrong_type_is_a_checkpoint_error(tmp_path):
    folder = write_random_checkpoint(tmp_path / "ckpt", tiny_config(), format="hf")
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = 7
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="id2label"):
        inspect_checkpoint(folder)


@pytest.fixture()
def hub(monkeypatch, tmp_path):
    """Makes snapshot_download raise ``error`` (set on the returned dict)."""
    import huggingface_hub

    state = {}

    def fake(repo_id, **kwargs):
        state["kwargs"] = kwargs
        raise state["error"]

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    return state


def _hub_error(kind: str):
    httpx = pytest.importorskip("httpx")
    from huggingface_hub import errors

    response = httpx.Response(401, request=httpx.Request("GET", "https://huggingface.co/api/models/a/b"))
    if kind == "gated":
        return errors.GatedRepoError("401", response=response)
    if kind == "missing":
        return errors.RepositoryNotFoundError("401", response=response)
    error = errors.LocalEntryNotFoundError("not cached")
    error.__cause__ = ConnectionError("Name or service not known")
    return error


def test_hub_failures_say_which_cause(hub, monkeypatch, tmp_path):
    hub["error"] = _hub_error("offline")
    with pytest.raises(ModelNotFoundError) as info:  # offline mode not set: the network is the cause
        resolve_model_path("a/b", cache_dir=tmp_path)
    assert "could not be reached (ConnectionError" in str(info.value) and "HF_HUB_OFFLINE" not in str(info.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE is set"):
        resolve_model_path("a/b", cache_dir=tmp_path)
    with pytest.raises(ModelNotFoundError, match="local_files_only=True"):
        resolve_model_path("a/b", cache_dir=tmp_path, local_files_only=True)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    hub["error"] = _hub_error("missing")
    with pytest.raises(ModelNotFoundError, match="was not found"):
        resolve_model_path("a/b", cache_dir=tmp_path)
    hub["error"] = _hub_error("gated")
    with pytest.raises(ModelNotFoundError, match="authentication needed"):
        resolve_model_path("a/b", cache_dir=tmp_path)


def test_file_regions_read_ranges_into_a_buffer_and_refuse_a_changed_file(tmp_path) -> None:
    import os

    import numpy as np
    from safetensors.numpy import save_file

    from spacy_privfilter.checkpoint.safetensors_io import read_header

    path = tmp_path / "w.safetensors"
    values = np.arange(4096, dtype=np.uint8).reshape(16, 256) % 251
    save_file({"codes": values}, str(path))
    region = read_header(path).region("codes")
    buffer = np.zeros(1024, dtype=np.uint8)
    got = region.read_range(512, 1000, buffer)
    assert np.array_equal(got, values.reshape(-1)[512:1512]) and np.shares_memory(got, buffer)
    assert np.array_equal(region.read_range(0, values.size), values.reshape(-1))
    with pytest.raises(IndexError, match="outside a tensor of 4096 bytes"):
        region.read_range(4000, 100)
    os.utime(path, ns=(0, 0))  # a re-download or an edit after loading
    with pytest.raises(CheckpointError, match="changed on disk after the model was loaded"):
        region.read_range(0, 16)
