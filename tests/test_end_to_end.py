"""End to end as a demanding spaCy user runs it: a tiny real checkpoint on the torch backend behind
``spacy.blank(...) + privacy_filter + privacy_redactor``.

The random model is made confident (``classifier_scale``) so that it finds spans in every text; expected results
come from other routes through the same pipeline (one doc at a time, the pure functions), never from the code
under test's own output.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from spacy_privfilter.testing import bioes_labels, tiny_config, write_random_checkpoint

pytest.importorskip("torch")
spacy = pytest.importorskip("spacy")
from spacy.tokens import Doc, DocBin, Span  # noqa: E402

CLASSES = ("email", "first_name", "last_name", "phone_number")
# Unique marker values: if one of them shows up in a log line, a warning or stderr, PII leaked.
MARKERS = ("Qzxmarkalpha", "Qzxmarkbravo", "qzxmarkcharlie@example.org", "Qzxmarkdelta")
MARKED_TEXTS = [
    f"Dear {MARKERS[0]} {MARKERS[1]}, write to {MARKERS[2]} or call 555-0100 today.",
    f"Patient {MARKERS[3]} (DOB 1984-10-28) was seen by Dr. {MARKERS[0]}.\r\nFollow up in 2 weeks.",
]
ROBUSTNESS_TEXTS = [
    "hello \x00 world Jane Doe jane@example.com",
    "line one\r\nline two for John Smith\r\n",
    "",
    "   \n\t  ",
    "a" * 20_000,  # one spaCy token, ~2.5k model tokens
    "مرحبا بالعالم، اسمي أحمد ورقمي ٠١٢٣٤٥٦٧٨٩ John",
    "e\u0301\u0301\u0301 cafe\u0301 Zoe\u0308 n\u0303",
    "👩\u200d👩\u200d👧\u200d👦 family of 👨🏽\u200d💻 Jane 🏳️\u200d🌈",
    "text <|endoftext|> more <|endofprompt|> mail x@y.com",
    "x",
    *MARKED_TEXTS,
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    config = tiny_config(id2label=bioes_labels(CLASSES))
    return write_random_checkpoint(tmp_path_factory.mktemp("e2e") / "tiny", config, format="hf", seed=5,
                                   classifier_scale=8.0)


def make_nlp(checkpoint: Path, lang: str = "en", redactor: dict | None = None, **filter_config):
    nlp = spacy.blank(lang)
    nlp.add_pipe("privacy_filter", config={"model": str(checkpoint), "backend": "torch", **filter_config})
    nlp.add_pipe("privacy_redactor", config=redactor or {})
    return nlp


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # Two CPU cores shared with other jobs: torch's spinning thread pool gets ~100x slower when oversubscribed.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def nlp(checkpoint):
    return make_nlp(checkpoint, set_ents=True)


def annotations(doc: Doc) -> tuple:
    """Spans, ents and redacted text (scores are compared separately: batching moves them by float noise)."""
    group = doc.spans["pii"]
    return ([(s.label_, s.start_char, s.end_char) for s in group], [(e.label_, e.start, e.end) for e in doc.ents],
            doc._.redacted_text)


def assert_same_docs(docs, reference) -> None:
    assert [doc.text for doc in docs] == [doc.text for doc in reference]
    assert [annotations(doc) for doc in docs] == [annotations(doc) for doc in reference]
    for doc, ref in zip(docs, reference):
        # Padded, batched float32 forward passes differ from one-row passes by ~1e-6 in the probabilities.
        assert doc.spans["pii"].attrs["scores"] == pytest.approx(ref.spans["pii"].attrs["scores"], abs=1e-4)


def test_awkward_texts_come_back_complete_and_in_order(nlp):
    one_by_one = [nlp(text) for text in ROBUSTNESS_TEXTS]
    assert sum(len(doc.spans["pii"]) for doc in one_by_one) > 20  # the random model does find spans
    for batch_size in (1, 1000):
        assert_same_docs(list(nlp.pipe(ROBUSTNESS_TEXTS, batch_size=batch_size)), one_by_one)
    pairs = list(nlp.pipe([(t, {"i": i}) for i, t in enumerate(ROBUSTNESS_TEXTS)], as_tuples=True, batch_size=3))
    assert [context["i"] for _, context in pairs] == list(range(len(ROBUSTNESS_TEXTS)))
    assert_same_docs([doc for doc, _ in pairs], one_by_one)
    for doc in one_by_one:
        spans = annotations(doc)[0]
        assert len(spans) == len(doc.spans["pii"].attrs["scores"])
        assert all(0 <= start < end <= len(doc.text) for _, start, end in spans)
        assert len(set(spans)) == len(spans)  # regression: no span twice in the group
        if not doc.text.strip():
            assert spans == [] and doc._.redacted_text == doc.text


def test_pieces_of_one_value_become_one_span():
    """Regression: model-token pieces that snap onto the same spaCy token were kept as duplicate spans."""
    from spacy_privfilter.alignment import align_spans
    from spacy_privfilter.spans import CharSpan

    doc = spacy.blank("en")("mail jane.doe@example.org now")
    assert len(doc) == 3
    pieces = [CharSpan("email", 5, 13, 0.6), CharSpan("email", 13, 25, 0.9), CharSpan("first_name", 5, 9, 0.7)]
    spans, scores, unaligned = align_spans(doc, pieces, [p.label for p in pieces], alignment_mode="expand")
    assert [(s.label_, s.start, s.end) for s in spans] == [("email", 1, 2), ("first_name", 1, 2)]
    assert scores == [0.9, 0.7] and unaligned == []
    # Touching but not overlapping spans of one label stay apart (two values side by side).
    doc = spacy.blank("en")("Jane Doe")
    spans, scores, _ = align_spans(doc, [CharSpan("first_name", 0, 4, 0.5), CharSpan("first_name", 5, 8, 0.4)],
                                   ["first_name"] * 2, alignment_mode="expand")
    assert [(s.start, s.end) for s in spans] == [(0, 1), (1, 2)] and scores == [0.5, 0.4]


def test_n_process_after_the_parent_ran_the_model(checkpoint):
    """Regression: a fork()ed worker blocked forever in torch's thread pool once the parent had run the model."""
    code = textwrap.dedent(f"""
        import json, spacy
        nlp = spacy.blank("en")
        nlp.add_pipe("privacy_filter", config={{"model": {str(checkpoint)!r}, "backend": "torch"}})
        nlp.add_pipe("privacy_redactor")
        texts = {MARKED_TEXTS!r} * 4 + ["", "Jane"]
        single = [d._.redacted_text for d in nlp.pipe(texts, batch_size=3)]
        docs = list(nlp.pipe(texts, batch_size=3, n_process=2))
        multi = [d._.redacted_text for d in docs]
        lists = all(isinstance(d._.redactions, list) for d in docs)  # msgpack gave tuples before
        print(json.dumps({{"same": multi == single, "n": len(multi), "changed": single != texts, "lists": lists}}))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"same": True, "n": 10, "changed": True, "lists": True}
    assert not any(marker in result.stderr for marker in MARKERS)


STYLE_CONFIGS = {
    "tag": {"style": "tag", "tag_format": "[{LABEL}_{n}]"},
    "mask": {"style": "mask"},
    "hash": {"style": "hash", "hash_key": "end-to-end-test-key", "hash_key_env": None},
    "surrogate": {"style": "surrogate", "seed": 7},
    "remove": {"style": "remove"},
}


@pytest.mark.parametrize("style", sorted(STYLE_CONFIGS))
def test_no_detected_span_survives_redaction(nlp, style):
    from spacy_privfilter.redactor import PrivacyRedactor

    if style == "surrogate":
        pytest.importorskip("faker")
    redactor = PrivacyRedactor(None, **STYLE_CONFIGS[style])
    texts = [t for t in ROBUSTNESS_TEXTS if 0 < len(t) < 1000]
    docs = [redactor(doc) for doc in nlp.pipe(texts)]
    checked = 0
    for doc in docs:
        text, redacted, records = doc.text, doc._.redacted_text, doc._.redactions
        # Records: sorted, disjoint, pointing at their replacement; everything between them is kept verbatim.
        kept, cursor, out_cursor = [], 0, 0
        for record in records:
            assert cursor <= record["start"] < record["end"] <= len(text)
            assert redacted[record["redacted_start"]:record["redacted_end"]] == record["replacement"]
            assert redacted[out_cursor:record["redacted_start"]] == text[cursor:record["start"]]
            kept.append(text[cursor:record["start"]])
            cursor, out_cursor = record["end"], record["redacted_end"]
        assert redacted[out_cursor:] == text[cursor:]
        assert "original" not in json.dumps(records) and doc._.redaction_mapping is None
        for span in doc.spans["pii"]:
            holder = [r for r in records if r["start"] <= span.start_char and span.end_char <= r["end"]]
            assert len(holder) == 1, "every detected span is inside one replacement"
            value = span.text
            if len(value) < 3 or not any(ch.isalnum() for ch in value):
                continue
            # A copy of the value that overlaps the replacement would be a leak.
            region = redacted[max(0, holder[0]["redacted_start"] - len(value) + 1):
                              holder[0]["redacted_end"] + len(value) - 1]
            assert value not in region
            checked += 1
    assert checked > 10
    # The redacted texts survive DocBin with the spans, their scores and the records.
    restored = list(DocBin(docs=docs, store_user_data=True).from_bytes(
        DocBin(docs=docs, store_user_data=True).to_bytes()).get_docs(nlp.vocab))
    for doc, back in zip(docs, restored):
        # Regression: the records came back as a tuple after msgpack; the documented type is a list.
        assert back._.redacted_text == doc._.redacted_text and back._.redactions == doc._.redactions
        assert annotations(back)[0] == annotations(doc)[0]
        assert list(back.spans["pii"].attrs["scores"]) == pytest.approx(list(doc.spans["pii"].attrs["scores"]))
