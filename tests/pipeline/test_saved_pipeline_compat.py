"""A pipeline saved by release 0.1.0 (tests/data/pipeline_v0_1_0) still loads offline and gives the spans, scores
and redacted text that release gave.

The folder is committed as 0.1.0 wrote it, less the two large files: ``model.safetensors`` is rebuilt here from
the same seed and config (``write_random_checkpoint`` is deterministic), and ``o200k_base.tiktoken`` from the
tokenizer cache (it is never committed)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import spacy


pytest.importorskip("torch")

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def saved_pipeline(tmp_path_factory, tiny_checkpoint) -> Path:
    from spacy_privfilter.checkpoint.files import write_tokenizer_file

    folder = tmp_path_factory.mktemp("old") / "pipeline"
    shutil.copytree(DATA / "pipeline_v0_1_0", folder)
    fresh = tiny_checkpoint(("first_name", "last_name", "email"), seed=3, classifier_scale=4.0)
    model = folder / "privacy_filter" / "model"
    shutil.copy(fresh / "model.safetensors", model / "model.safetensors")
    assert write_tokenizer_file(model)
    return folder


def test_pipeline_saved_by_0_1_0_loads_and_gives_the_same_results(saved_pipeline):
    expected = json.loads((DATA / "pipeline_v0_1_0_expected.json").read_text(encoding="utf-8"))
    nlp = spacy.load(saved_pipeline)
    assert nlp.pipe_names == ["privacy_filter", "privacy_redactor"]
    docs = list(nlp.pipe([record["text"] for record in expected]))
    assert sum(len(record["spans"]) for record in expected) > 10
    for doc, record in zip(docs, expected):
        assert [[s.label_, s.start_char, s.end_char] for s in doc.spans["pii"]] == record["spans"]
        assert [float(x) for x in doc.spans["pii"].attrs["scores"]] == pytest.approx(record["scores"], abs=2e-4)
        assert doc._.redacted_text == record["redacted_text"]
