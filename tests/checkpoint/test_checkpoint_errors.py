"""Every broken checkpoint and every Hub failure gets its own error that names the problem (and no tensor data)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spacy_privfilter.checkpoint import inspect_checkpoint, load_state_dict, resolve_model_path, save_checkpoint
from spacy_privfilter.config import SUPPORTED_BITS
from spacy_privfilter.errors import CheckpointError, ModelNotFoundError
from spacy_privfilter.checkpoint.safetensors_io import PendingTensor, read_header, read_numpy, write_safetensors
from spacy_privfilter.testing import random_state_dict, tiny_config, write_random_checkpoint

CONFIG = tiny_config(vocab_size=1000)


@pytest.fixture()
def hf(tmp_path) -> Path:
    return write_random_checkpoint(tmp_path / "hf", CONFIG, format="hf", seed=3)


def _rewrite(path: Path, *, drop=(), add=(), reshape=()) -> None:
    """Rewrite a float32 safetensors file without ``drop``, with extra ``add`` names and ``reshape``d tensors."""
    header = read_header(path)
    tensors = [PendingTensor(n, "F32", (1, *e.shape) if n in reshape else e.shape,
                             lambda n=n, r=n in reshape: read_numpy(header, n)[None] if r else read_numpy(header, n))
               for n, e in header.tensors.items() if n not in drop]
    tensors += [PendingTensor(n, "F32", (2,), lambda: np.zeros(2, np.float32)) for n in add]
    write_safetensors(path, tensors, header.metadata)


def test_missing_unexpected_and_misshaped_keys_in_one_error(hf):
    _rewrite(hf / "model.safetensors", drop=["model.layers.1.mlp.router.bias"],
             add=["model.layers.0.extra.weight"], reshape=["model.layers.0.self_attn.sinks"])
    info = inspect_checkpoint(hf)
    with pytest.raises(CheckpointError) as err:
        load_state_dict(info)
    message = str(err.value)
    assert "1 missing: model.layers.1.mlp.router.bias" in message
    assert "1 unexpected: model.layers.0.extra.weight" in message
    assert "1 mis-shaped: model.layers.0.self_attn.sinks [1, 4] (expected [4])" in message


def test_opf_and_mlx_key_errors_use_file_names(tmp_path):
    opf = write_random_checkpoint(tmp_path / "opf", CONFIG, format="opf")
    _rewrite(opf / "model.safetensors", drop=["block.0.attn.qkv.bias"])
    with pytest.raises(CheckpointError, match=r"missing: block\.0\.attn\.qkv\.bias"):
        load_state_dict(inspect_checkpoint(opf))
    # MLX: the classifier_bias flag must match the weights (MLX's own loader is strict about it too).
    mlx = write_random_checkpoint(tmp_path / "mlx", CONFIG, format="mlx-bf16")
    _rewrite(mlx / "weights.safetensors", drop=["unembedding.bias"])
    with pytest.raises(CheckpointError, match=r"missing: unembedding\.bias"):
        load_state_dict(inspect_checkpoint(mlx))


@pytest.mark.parametrize("keep", [4, 100, 5000, -1000])
def test_truncated_weight_file(hf, keep):
    weights = hf / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:keep])
    with pytest.raises(CheckpointError, match=r"'model\.safetensors' is truncated or corrupt"):
        load_state_dict(inspect_checkpoint(hf))


def test_corrupt_header(hf):
    weights = hf / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:16] = b"\xff\xfe{{{{{{"
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"'model\.safetensors' is truncated or corrupt \(header is not"):
        inspect_checkpoint(hf)


def test_label_count_mismatch(hf):
    config = json.loads((hf / "config.json").read_text())
    config["id2label"] = {str(i): f"S-class{i}" for i in range(5)}
    (hf / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="label count mismatch.*9 rows but id2label has 5 labels"):
        load_state_dict(inspect_checkpoint(hf))


def test_pickle_only_folder(tmp_path, hf):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text((hf / "config.json").read_text())
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match=r"only non-safetensors weights \(pytorch_model\.bin\).*only "
                                              r"safetensors weights are loaded"):
        inspect_checkpoint(folder)


def test_missing_config(hf):
    (hf / "config.json").unlink()
    with pytest.raises(CheckpointError, match="has no config.json"):
        inspect_checkpoint(hf)


def test_missing_id2label_and_wrong_model_type(hf):
    config = json.loads((hf / "config.json").read_text())
    (hf / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(CheckpointError, match="model_type 'bert'"):
        inspect_checkpoint(hf)
    del config["id2label"], config["label2id"]
    (hf / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="no id2label"):
        inspect_checkpoint(hf)


def test_quantized_mlx_without_quantization_block(tmp_path):
    mlx = write_random_checkpoint(tmp_path, CONFIG, format="mlx-8bit")
    config = json.loads((mlx / "config.json").read_text())
    del config["_mlx_quantization"]
    (mlx / "config.json").write_text(json.dumps(config))
    (mlx / "openmed-mlx.json").unlink()
    with pytest.raises(CheckpointError, match=r"quantized tensors \(\*\.scales\) but config\.json has no "
                                              r"_mlx_quantization"):
        inspect_checkpoint(mlx)


@pytest.mark.parametrize("where", ["config.json", "openmed-mlx.json"])
def test_unsupported_bit_width_fails_at_inspection_naming_the_file(tmp_path, where):
    """A 3-bit artifact is refused when inspected, not deep inside a backend's unpacking."""
    mlx = write_random_checkpoint(tmp_path, CONFIG, format="mlx-8bit")
    config = json.loads((mlx / "config.json").read_text())
    manifest = json.loads((mlx / "openmed-mlx.json").read_text())
    if where == "config.json":
        config["_mlx_quantization"]["bits"] = 3
    else:
        del config["_mlx_quantization"]
        manifest["quantization"]["bits"] = 3
    (mlx / "config.json").write_text(json.dumps(config))
    (mlx / "openmed-mlx.json").write_text(json.dumps(manifest))
    supported = ", ".join(map(str, SUPPORTED_BITS))
    with pytest.raises(CheckpointError, match=rf"{re.escape(where)}.*bits must be one of {supported}; got 3"):
        inspect_checkpoint(mlx)


def test_save_needs_numpy_values(tmp_path):
    torch = pytest.importorskip("torch")
    weights = random_state_dict(CONFIG)
    weights["model.norm.weight"] = torch.ones(CONFIG.hidden_size, dtype=torch.bfloat16)
    with pytest.raises(CheckpointError, match="save_checkpoint needs numpy arrays; got a Tensor.*Fix: convert"):
        save_checkpoint(weights, CONFIG, tmp_path / "out", format="hf")
    del weights["model.norm.weight"]
    weights["model.extra"] = np.zeros(2)
    with pytest.raises(CheckpointError, match="1 missing: model.norm.weight; 1 unexpected: model.extra"):
        save_checkpoint(weights, CONFIG, tmp_path / "out", format="hf")


def test_mlx_npz_only_artifact(tmp_path):
    mlx = write_random_checkpoint(tmp_path, CONFIG, format="mlx-bf16")
    (mlx / "weights.safetensors").rename(mlx / "weights.npz")
    with pytest.raises(CheckpointError, match=r"weights\.npz.*only safetensors"):
        inspect_checkpoint(mlx)


def test_local_folder_missing(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model_path(tmp_path / "nope")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        inspect_checkpoint(tmp_path / "nope")


# -- Hub ---------------------------------------------------------------------------------------------------------
def test_offline_hub_miss_names_the_repo(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model_path("OpenMed/privacy-filter-nemotron")
    assert "Hub repo 'OpenMed/privacy-filter-nemotron' is not in the local Hub cache" in str(err.value)
    assert "HF_HUB_OFFLINE" in str(err.value)


def _fake_cache(cache: Path, repo_id: str, source: Path, files: list[str], revision: str = "main") -> Path:
    """Lay out ``files`` of ``source`` the way huggingface_hub caches a snapshot (blobs + symlinks + refs)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / revision).write_text(commit)
    for i, name in enumerate(files):
        blob = repo / "blobs" / f"{i:040x}"
        blob.write_bytes((source / name).read_bytes())
        (snapshot / name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    return snapshot


def test_offline_hub_hit_from_a_prepopulated_cache(tmp_path, monkeypatch, hf):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    snapshot = _fake_cache(tmp_path / "hf-home" / "hub", "someone/tiny-filter", hf, ["config.json",
                                                                                        "model.safetensors"])
    folder = resolve_model_path("someone/tiny-filter")
    assert folder.resolve() == snapshot.resolve()
    assert inspect_checkpoint(folder).config.num_labels == 9
    # The same cache given explicitly, with the env cache elsewhere.
    monkeypatch.setenv("HF_HOME", str(tmp_path / "elsewhere"))
    assert resolve_model_path("someone/tiny-filter", cache_dir=tmp_path / "hf-home" / "hub") == folder
    with pytest.raises(ModelNotFoundError, match="revision 'v2'.*not in the local Hub cache"):
        resolve_model_path("someone/tiny-filter", revision="v2", cache_dir=tmp_path / "hf-home" / "hub")


TIKTOKEN_FILE = Path(__file__).resolve().parents[2].parent / "shared" / "tokenizers" / "tiktoken_cache" / \
    "fb374d419588a4632f3f557e76b4b70aebbca790"  # tiktoken's cached copy of o200k_base.tiktoken
DETECT_IN_CLEAN_ENV = """
import json, os, sys
from spacy_privfilter.detector import Detector
detector = Detector.from_pretrained("someone/tiny-filter", device="cpu")
spans = detector.detect("Call Ada Lovelace at 555-0100 or mail ada@example.org.")
print(json.dumps({"path": str(detector.backend.model_path), "spans": len(spans),
                  "cache": sorted(os.listdir(os.environ["TIKTOKEN_CACHE_DIR"]))}))
"""


@pytest.mark.parametrize("with_tokenizer", [True, False])
def test_offline_hub_model_uses_the_tokenizer_file_it_ships(tmp_path, with_tokenizer):
    """A Hub snapshot holding o200k_base.tiktoken tokenizes offline with an empty tiktoken cache; without the
    file the same clean environment fails, so the file is what makes it work."""
    pytest.importorskip("torch")
    if not TIKTOKEN_FILE.is_file():
        pytest.skip("the shared tiktoken cache is not present")
    hf = write_random_checkpoint(tmp_path / "full-vocab", tiny_config(), format="hf", dtype="bfloat16")
    (hf / "o200k_base.tiktoken").write_bytes(TIKTOKEN_FILE.read_bytes())
    files = ["config.json", "model.safetensors"] + (["o200k_base.tiktoken"] if with_tokenizer else [])
    snapshot = _fake_cache(tmp_path / "hf-home" / "hub", "someone/tiny-filter", hf, files)
    (tmp_path / "empty-tiktoken").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TIKTOKEN", "HUGGINGFACE"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"),
               TIKTOKEN_CACHE_DIR=str(tmp_path / "empty-tiktoken"), PYTHONPATH=str(Path(__file__).parents[2]))
    done = subprocess.run([sys.executable, "-c", DETECT_IN_CLEAN_ENV], env=env, capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    if not with_tokenizer:
        assert done.returncode != 0 and "TokenizerError" in done.stderr
        return
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(result["path"]).resolve() == snapshot.resolve()
    assert result["cache"] == [] and isinstance(result["spans"], int)


def test_cached_repo_without_weights(tmp_path, monkeypatch, hf):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _fake_cache(tmp_path / "cache", "someone/config-only", hf, ["config.json"])
    with pytest.raises(ModelNotFoundError, match="'someone/config-only' has no safetensors weight file"):
        resolve_model_path("someone/config-only", cache_dir=tmp_path / "cache")
    _fake_cache(tmp_path / "cache", "someone/weights-only", hf, ["model.safetensors"])
    with pytest.raises(ModelNotFoundError, match="'someone/weights-only' has no file 'config.json'"):
        resolve_model_path("someone/weights-only", cache_dir=tmp_path / "cache")


def test_hub_errors_become_model_not_found(tmp_path, monkeypatch):
    httpx = pytest.importorskip("httpx")
    import huggingface_hub
    from huggingface_hub import errors

    calls = []
    response = httpx.Response(404, request=httpx.Request("GET", "https://huggingface.co/api/models/nobody/missing"))

    def fake_download(repo_id, **kwargs):
        calls.append(kwargs)
        raise errors.RepositoryNotFoundError("404", response=response)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    with pytest.raises(ModelNotFoundError, match="'nobody/missing' was not found"):
        resolve_model_path("nobody/missing", local_files_only=False, cache_dir=tmp_path)
    # Only the files a checkpoint needs are requested.
    patterns = calls[0]["allow_patterns"]
    assert "config.json" in patterns and "weights.safetensors" in patterns and "model.safetensors" in patterns
    assert not any(p.endswith((".bin", ".pt", ".pth", ".onnx", "*")) and p != "model-*-of-*.safetensors"
                   for p in patterns)
    assert calls[0]["local_files_only"] is False


def test_wrong_dtypes_are_listed(tmp_path):
    mlx = write_random_checkpoint(tmp_path, CONFIG, format="mlx-8bit")
    header = read_header(mlx / "weights.safetensors")

    def as_float(name):
        return lambda: read_numpy(header, name).astype(np.float32)

    tensors = [PendingTensor(n, "F32" if n == "block.0.mlp.gate.weight" else e.dtype, e.shape,
                             as_float(n) if n == "block.0.mlp.gate.weight" else (lambda n=n: read_numpy(header, n)))
               for n, e in header.tensors.items()]
    write_safetensors(mlx / "weights.safetensors", tensors, header.metadata)
    with pytest.raises(CheckpointError,
                       match=r"1 of the wrong dtype: block\.0\.mlp\.gate\.weight F32 \(expected U32\)"):
        load_state_dict(inspect_checkpoint(mlx))


def test_mlx_head_bias_without_a_flag_follows_the_weights(tmp_path):
    mlx = write_random_checkpoint(tmp_path, CONFIG, format="mlx-bf16")
    config = json.loads((mlx / "config.json").read_text())
    del config["classifier_bias"]
    (mlx / "config.json").write_text(json.dumps(config))
    info = inspect_checkpoint(mlx)
    assert info.config.classifier_bias is True
    assert np.any(load_state_dict(info)["score.bias"])
    _rewrite(mlx / "weights.safetensors", drop=["unembedding.bias"])
    info = inspect_checkpoint(mlx)
    assert info.config.classifier_bias is False
    assert not np.any(load_state_dict(info)["score.bias"])
