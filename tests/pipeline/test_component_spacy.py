"""What spaCy users rely on: requires/labels metadata, extensions in a fresh process, one shared model per
settings, ``device="auto"`` following spaCy's ops, early config and device errors."""
from __future__ import annotations

import gc
import subprocess
import sys
import textwrap

import pytest
import spacy
import thinc.util
from spacy.tokens import DocBin
from thinc.backends import context_ops, set_current_ops

from component_fakes import FixedDetector, make_nlp, span_at
from spacy_privfilter.errors import ConfigError
from spacy_privfilter.pipeline import privacy_filter
from spacy_privfilter.pipeline.runtime import resolve_device
from spacy_privfilter.testing import bioes_labels, tiny_config, write_random_checkpoint

TEXT = "Mail Jane at jane@example.org today."


def test_analyze_pipes_sees_a_redactor_placed_first():
    nlp = spacy.blank("en")
    nlp.add_pipe("privacy_redactor")
    nlp.add_pipe("privacy_filter")
    assert nlp.analyze_pipes()["problems"]["privacy_redactor"] == ["doc.spans"]
    nlp = spacy.blank("en")
    nlp.add_pipe("privacy_filter")
    nlp.add_pipe("privacy_redactor")
    assert nlp.analyze_pipes()["problems"]["privacy_redactor"] == []


def test_labels_are_reported_once_the_model_is_known(tmp_path):
    nlp = spacy.blank("en")
    component = nlp.add_pipe("privacy_filter", config={"label_map": {"first_name": "PERSON", "last_name": "PERSON"},
                                                       "save_model": "reference"})
    assert component.labels == () and nlp.pipe_labels["privacy_filter"] == []
    component.detector = FixedDetector({})  # classes: first_name, last_name, email, phone_number
    assert component.labels == ("PERSON", "email", "phone_number") and component.label_data == list(component.labels)
    assert nlp.pipe_labels["privacy_filter"] == list(component.labels)
    assert nlp.meta["labels"]["privacy_filter"] == list(component.labels)
    nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    assert loaded.get_pipe("privacy_filter")._detector is None  # known without loading the model
    assert loaded.pipe_labels["privacy_filter"] == list(component.labels)


def test_labels_follow_the_labels_filter():
    nlp = make_nlp(FixedDetector({}), labels=["email", "PERSON"], label_map={"first_name": "PERSON"})
    assert nlp.get_pipe("privacy_filter").labels == ("PERSON", "email")


def test_an_empty_labels_list_is_rejected():
    with pytest.raises(ConfigError, match="'labels' is an empty list"):
        spacy.blank("en").add_pipe("privacy_filter", config={"labels": []})


def test_device_errors_appear_at_construction_and_name_the_component():
    pytest.importorskip("torch")
    import torch

    nlp = spacy.blank("en")
    with pytest.raises(ConfigError, match="'device' must be auto, cpu, cuda, cuda:N"):
        nlp.add_pipe("privacy_filter", name="pii_gpu", config={"device": "gpu0"})
    missing = f"cuda:{torch.cuda.device_count()}"  # one past the last device, on any machine
    with pytest.raises(ConfigError, match=f"privacy_filter 'pii_gpu': device '{missing}' is not available"):
        nlp.add_pipe("privacy_filter", name="pii_gpu", config={"device": missing, "backend": "torch"})


def test_docbin_with_redactions_reads_in_a_fresh_process(tmp_path):
    nlp = make_nlp(FixedDetector({TEXT: [span_at(TEXT, "Jane", "first_name")]}))
    nlp.add_pipe("privacy_redactor")
    DocBin(docs=[nlp(TEXT)], store_user_data=True).to_disk(tmp_path / "docs.spacy")
    for order in ("import spacy_privfilter, spacy", "import spacy, spacy_privfilter"):
        code = textwrap.dedent(f"""
            {order}
            from spacy.tokens import DocBin
            doc = next(DocBin().from_disk({str(tmp_path / 'docs.spacy')!r}).get_docs(spacy.blank("en").vocab))
            print(doc._.redacted_text, len(doc._.redactions))
        """)
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-1500:]
        assert result.stdout.split() == ["Mail", "[FIRST_NAME]", "at", "jane@example.org", "today.", "1"]


class _FakeGpuOps:
    def __init__(self, name: str, device_id: int = 0) -> None:
        self.name, self.device_id, self.device_type = name, device_id, "gpu"


@pytest.fixture
def restore_ops():
    before = context_ops.get()
    yield
    set_current_ops(before)


def test_device_auto_follows_thincs_ops(monkeypatch, restore_ops):
    set_current_ops(_FakeGpuOps("cupy", device_id=1))  # what spacy.require_gpu(1) leaves (CuPy absent here)
    assert resolve_device("auto", "torch") == "cuda:1"
    assert resolve_device("auto", "mlx") == "auto"  # MLX has no CUDA device
    set_current_ops(_FakeGpuOps("mps"))
    assert resolve_device("auto", "torch") == "mps"
    monkeypatch.setattr(thinc.util, "has_gpu", True)
    spacy.require_cpu()
    assert resolve_device("auto", "torch") == "cpu"  # spaCy could use a GPU and was told not to
    assert resolve_device("cuda", "torch") == "cuda"  # an explicit device is kept
    monkeypatch.setattr(thinc.util, "has_gpu", False)
    assert resolve_device("auto", "torch") == "auto"  # thinc cannot see a GPU: the backend decides


def test_component_loads_on_the_device_spacy_chose(monkeypatch, restore_ops):
    calls = []
    monkeypatch.setattr(privacy_filter, "load_detector", lambda model, **kw: calls.append(kw) or FixedDetector({}))
    monkeypatch.setattr(thinc.util, "has_gpu", True)
    spacy.require_cpu()
    nlp = spacy.blank("en")
    nlp.add_pipe("privacy_filter", config={"backend": "torch"})
    nlp.initialize()
    assert calls[0]["device"] == "cpu" and calls[0]["backend"] == "torch"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    pytest.importorskip("torch")
    config = tiny_config(id2label=bioes_labels(("iban", "kennzeichen")))  # a fine-tune with its own label set
    return write_random_checkpoint(tmp_path_factory.mktemp("shared") / "ckpt", config, format="hf", seed=5)


def _pipeline(model, **config):
    nlp = spacy.blank("en")
    nlp.add_pipe("privacy_filter", config={"model": str(model), "backend": "torch", "device": "cpu", **config})
    nlp.initialize()
    return nlp


def test_equal_settings_share_one_loaded_model(checkpoint):
    first = _pipeline(checkpoint, dtype="float32")
    second = _pipeline(checkpoint, dtype="float32", threshold=0.5, label_map={"iban": "IBAN"})
    other = _pipeline(checkpoint, dtype="bfloat16")
    backend = first.get_pipe("privacy_filter").detector.backend
    assert second.get_pipe("privacy_filter").detector.backend is backend
    assert other.get_pipe("privacy_filter").detector.backend is not backend
    assert first.get_pipe("privacy_filter").labels == ("iban", "kennzeichen")  # labels from the checkpoint
    assert second.get_pipe("privacy_filter").labels == ("IBAN", "kennzeichen")
    doc = second("Kontonummer DE89 3704 0044 0532 0130 00.")
    assert {span.label_ for span in doc.spans["pii"]} <= {"IBAN", "kennzeichen"}


def test_the_shared_model_is_released_with_its_last_component(checkpoint):
    from spacy_privfilter.pipeline import runtime

    nlp = _pipeline(checkpoint, dtype="float16")
    keys = [k for k in runtime._MODELS.keys() if k[4] == "float16"]
    assert len(keys) == 1
    del nlp
    gc.collect()
    assert keys[0] not in runtime._MODELS


def test_a_gguf_file_is_a_model_and_travels_with_the_saved_pipeline(tmp_path):
    pytest.importorskip("gguf")
    pytest.importorskip("torch")
    from spacy_privfilter.checkpoint.gguf_writer import write_gguf
    from spacy_privfilter.testing import margin_state_dict

    config = tiny_config(id2label=bioes_labels(("iban", "kennzeichen")))
    (tmp_path / "downloads").mkdir()
    model = write_gguf(margin_state_dict(config, seed=2), config, tmp_path / "downloads" / "pf-q8.gguf",
                       experts="Q8_0")
    nlp = _pipeline(model)
    text = "Überweisung an DE89 3704 0044 0532 0130 00, Kennzeichen B-AB 1234."
    doc = nlp(text)
    expected = [(s.label_, s.start_char, s.end_char) for s in doc.spans["pii"]]
    assert nlp.get_pipe("privacy_filter").labels == ("iban", "kennzeichen")
    assert any("gguf" in r for r in nlp.meta["requirements"])
    nlp.to_disk(tmp_path / "pipeline")
    assert sorted(p.name for p in (tmp_path / "pipeline" / "privacy_filter" / "model").iterdir()) == [
        "o200k_base.tiktoken", "pf-q8.gguf"]
    loaded = spacy.load(tmp_path / "pipeline")
    again = loaded(text)
    assert [(s.label_, s.start_char, s.end_char) for s in again.spans["pii"]] == expected
