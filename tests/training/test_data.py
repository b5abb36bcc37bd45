"""Reading labelled data (JSONL, DocBin), the deterministic split, and the import boundary."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from spacy_privfilter.errors import ConfigError
from spacy_privfilter.training import GoldSpan, load_examples, split_examples
from spacy_privfilter.training.data import DataError, check_classes

from .synthetic import make_docs

SECRET = "Zebulon Quartermaine"


def _write_jsonl(path, records) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")


def test_jsonl_spans_are_read_in_order_with_label_map(tmp_path) -> None:
    path = tmp_path / "gold.jsonl"
    _write_jsonl(path, [{"text": f"I am {SECRET}.", "spans": [{"start": 5, "end": 25, "label": "NAME"}], "source": "s"},
                        {"text": "nothing here", "spans": []}])
    docs = load_examples(path, label_map={"NAME": "private_person"})
    assert [d.spans for d in docs] == [(GoldSpan(5, 25, "private_person"),), ()]
    assert docs[0].source == "s" and docs[1].source == str(path)


@pytest.mark.parametrize("line, field", [
    ('{"text": 3, "spans": []}', "'text'"),
    ('{"text": "abc", "spans": {}}', "'spans'"),
    ('{"text": "abc", "spans": [{"start": 1, "end": 9, "label": "x"}]}', "spans[0]"),
    ('{"text": "abc", "spans": [{"start": "1", "end": 2, "label": "x"}]}', "spans[0]"),
    ('[1]', "JSON object"),
    ('{"text": "abc"', "invalid JSON"),
])
def test_bad_lines_name_file_line_and_field_never_text(tmp_path, line, field) -> None:
    path = tmp_path / "bad.jsonl"
    _write_jsonl(path, [{"text": SECRET, "spans": []}, line])
    with pytest.raises(DataError) as info:
        load_examples(path)
    message = str(info.value)
    assert f"{path}:2" in message and field in message and SECRET not in message


def test_docbin_spans_and_ents(tmp_path) -> None:
    spacy = pytest.importorskip("spacy")
    from spacy.tokens import DocBin

    nlp = spacy.blank("en")
    with_group = nlp(f"Mail {SECRET} today")
    with_group.spans["spans"] = [with_group.char_span(5, 25, label="private_person")]
    with_ents = nlp("Call Bob now")
    with_ents.ents = [with_ents.char_span(5, 8, label="private_person")]
    path = tmp_path / "gold.spacy"
    DocBin(docs=[with_group, with_ents], store_user_data=True).to_disk(path)
    docs = load_examples(path)
    assert [d.spans for d in docs] == [(GoldSpan(5, 25, "private_person"),), (GoldSpan(5, 8, "private_person"),)]


def test_split_is_deterministic_and_salted() -> None:
    docs = make_docs(200, seed=0)
    fit, held = split_examples(docs, 0.25)
    assert split_examples(list(reversed(docs)), 0.25)[1] == list(reversed(held))
    assert 25 < len(held) < 75 and len(fit) + len(held) == 200
    # Splitting the held-out part again with the same salt would keep all of it on one side.
    assert split_examples(held, 0.25)[0] == []
    again_fit, again_held = split_examples(held, 0.25, salt="calibration")
    assert again_fit and again_held


def test_unknown_labels_are_listed() -> None:
    docs = make_docs(20, seed=0, pets=True)
    with pytest.raises(ConfigError, match="pet"):
        check_classes(docs, ("private_person", "private_email"))
    assert check_classes(docs, ("private_person", "private_email"), allow_new=True) == ["pet"]


def test_importing_training_does_not_import_torch() -> None:
    code = ("import sys; sys.modules['torch'] = None; sys.modules['mlx'] = None\n"
            "import spacy_privfilter.training as t\n"
            "from spacy_privfilter.errors import BackendUnavailableError\n"
            "t.TrainConfig(mode='head')\n"
            "try:\n    t.train('m', [], 'o')\nexcept BackendUnavailableError as e:\n    print('needs', e)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install" in result.stdout
