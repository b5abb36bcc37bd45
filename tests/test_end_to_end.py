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
def checkpoint(tiny_checkpoint) -> Path:
    return tiny_checkpoint(CLASSES, seed=5, classifier_scale=8.0)


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
    from spacy_privfilter.pipeline.alignment import align_spans
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


@pytest.fixture(scope="module")
def bf16_checkpoint(tiny_checkpoint) -> Path:
    """Stored in bfloat16, so on the CPU its experts run through the oneDNN-packed path."""
    return tiny_checkpoint(CLASSES, seed=5, classifier_scale=8.0, dtype="bfloat16")


@pytest.mark.parametrize("stored", ["float32", "bfloat16"])
def test_n_process_after_the_parent_ran_the_model(request, stored):
    """Regression: a fork()ed worker blocked forever in torch's thread pool once the parent had run the model."""
    checkpoint = request.getfixturevalue("checkpoint" if stored == "float32" else "bf16_checkpoint")
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
        experts = type(nlp.get_pipe("privacy_filter").detector.backend.model.layers[0].mlp.experts).__name__
        print(json.dumps({{"same": multi == single, "n": len(multi), "changed": single != texts, "lists": lists,
                          "experts": experts}}))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    from spacy_privfilter.backends.native import load_kernel
    from spacy_privfilter.backends.torch_packed import packing_available

    # bf16 experts run in the forked workers with the native kernel (one OpenMP runtime, torch's), else oneDNN
    fast = "NativeExperts" if load_kernel() else "PackedExperts" if packing_available() else "Experts"
    experts = fast if stored == "bfloat16" else "Experts"
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"same": True, "n": 10, "changed": True, "lists": True,
                                                                  "experts": experts}
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
    from spacy_privfilter.pipeline.privacy_redactor import PrivacyRedactor

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


def covered(doc: Doc, char_spans) -> bool:
    """Every detected character span lies inside a group span of the same label."""
    group = [(s.label_, s.start_char, s.end_char) for s in doc.spans["pii"]]
    return all(any(label == c.label and start <= c.start and c.end <= end for label, start, end in group)
               for c in char_spans)


@pytest.mark.parametrize("lang", ["zh", "xx"])
def test_other_tokenizers_keep_every_detected_span(checkpoint, lang):
    nlp = make_nlp(checkpoint, lang)
    texts = ["我叫王小明，电话是13800138000，邮箱wang@example.cn。", "東京都の山田太郎さん email taro@example.jp",
             MARKED_TEXTS[0]]
    detector = nlp.get_pipe("privacy_filter").detector
    for doc, char_spans in zip(nlp.pipe(texts), detector.detect_batch(texts)):
        assert char_spans and covered(doc, char_spans)
        assert doc.spans["pii"].attrs["unaligned"] == 0
        # With a coarser tokenizer, expand mode redacts whole tokens: more text goes, never less.
        assert all(r["end"] - r["start"] >= 1 for r in doc._.redactions)


def test_existing_ents_and_span_groups_are_respected(checkpoint):
    nlp = make_nlp(checkpoint, set_ents=True, ents_policy="prioritize_existing")
    doc = nlp.make_doc(f"Acme Corp hired {MARKERS[0]} {MARKERS[1]} in Paris yesterday")
    doc.ents = [Span(doc, 0, 2, "ORG"), Span(doc, 6, 7, "GPE")]
    doc.spans["other"] = [Span(doc, 0, 1, "X")]
    doc.spans["pii"] = [Span(doc, 0, 7, "STALE")]  # a previous run's group is replaced, not merged
    doc = nlp(doc)
    ents = [(e.label_, e.start, e.end) for e in doc.ents]
    assert ("ORG", 0, 2) in ents and ("GPE", 6, 7) in ents
    assert sum(e - s for _, s, e in ents) == len({t for _, s, e in ents for t in range(s, e)})  # no overlap
    assert [(s.label_, s.start, s.end) for s in doc.spans["other"]] == [("X", 0, 1)]
    assert "STALE" not in {s.label_ for s in doc.spans["pii"]} and len(doc.spans["pii"]) > 0
    new = make_nlp(checkpoint, set_ents=True, ents_policy="prioritize_new")
    doc2 = new.make_doc(doc.text)
    doc2.ents = [Span(doc2, 0, 2, "ORG")]
    doc2 = new(doc2)
    pii = {(s.start, s.end) for s in doc2.spans["pii"]}
    kept_org = ("ORG", 0, 2) in [(e.label_, e.start, e.end) for e in doc2.ents]
    assert kept_org == (not any(s < 2 for s, _ in pii))  # ORG goes only where a new span overlaps it


def test_long_doc_near_max_length(nlp):
    sentence = f"Write to {MARKERS[2]} or call 555-0100. "
    text = (sentence * (30_000 // len(sentence) + 1))[:29_990]
    saved = nlp.max_length
    nlp.max_length = 30_000
    try:
        doc = nlp(text)
        with pytest.raises(ValueError, match="E088"):  # spaCy's own, clear limit error (no text in it)
            nlp(text * 2)
    finally:
        nlp.max_length = saved
    ends = [s.end_char for s in doc.spans["pii"]]
    assert len(ends) > 100 and max(ends) > 29_000  # spans all along: the windows reach the end
    assert doc._.redacted_text != text


def test_lone_surrogates_reach_the_detector_safely(nlp):
    # spaCy itself cannot build a Doc from "\ud800" (its string store encodes UTF-8), so the component never
    # sees one; the Detector (used without spaCy, e.g. by redact pipelines on raw strings) must cope.
    detector = nlp.get_pipe("privacy_filter").detector
    text = f"lone \ud800 surrogate {MARKERS[0]} \udfff end"
    spans = detector.detect(text)
    assert spans and all(0 <= s.start < s.end <= len(text) for s in spans)
    clean = text.replace("\ud800", "\ufffd").replace("\udfff", "\ufffd")
    assert [(s.label, s.start, s.end) for s in spans] == [(s.label, s.start, s.end) for s in detector.detect(clean)]


def no_marker_in(*outputs: str) -> bool:
    return not any(marker.lower() in out.lower() for out in outputs for marker in MARKERS)


def test_no_pii_in_logs_warnings_or_handled_errors(checkpoint, caplog):
    nlp = make_nlp(checkpoint, alignment_mode="strict", set_ents=True)
    failing = MARKED_TEXTS[1]
    detector = nlp.get_pipe("privacy_filter").detector
    real_detect_batch = detector.detect_batch

    def flaky_detect_batch(texts):
        texts = list(texts)
        if failing in texts:
            raise RuntimeError("backend failure")  # e.g. out of memory in one batch
        return real_detect_batch(texts)

    detector.detect_batch = flaky_detect_batch
    handled = []
    nlp.set_error_handler(lambda name, component, docs, exc: handled.append((name, [d.text for d in docs])))
    texts = MARKED_TEXTS * 3 + ["\U0001F469\u200d\U0001F4BB " + MARKERS[3]]
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        docs = list(nlp.pipe(texts, batch_size=4))
    # Only the failing docs went to the handler; every other doc came back, in order, redacted.
    assert handled == [("privacy_filter", [failing])] * 3
    assert [d.text for d in docs] == [t for t in texts if t != failing]
    assert sum(d.spans["pii"].attrs["unaligned"] for d in docs) > 0 and caught  # strict mode did warn
    messages = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    assert no_marker_in(*messages)
    # The default handler re-raises the component's error, which must not quote the text either.
    nlp.set_error_handler(spacy.util.raise_error)
    with pytest.raises(RuntimeError) as raised:
        list(nlp.pipe([failing]))
    assert no_marker_in(str(raised.value))
    redactor = nlp.get_pipe("privacy_redactor")
    with pytest.raises(ValueError) as raised:  # fail closed without a span group, and say why without text
        redactor(nlp.make_doc(MARKED_TEXTS[0]))
    assert no_marker_in(str(raised.value))


def test_redact_one_liner_refuses_lone_surrogates_clearly(nlp):
    import spacy_privfilter

    texts = [MARKED_TEXTS[0], f"{MARKERS[0]} \ud800"]
    with pytest.raises(ValueError, match=r"items \[1\] contain lone surrogates") as raised:
        spacy_privfilter.redact(texts, nlp=nlp)
    assert no_marker_in(str(raised.value))
    assert spacy_privfilter.redact(MARKED_TEXTS[0], nlp=nlp) == nlp(MARKED_TEXTS[0])._.redacted_text


@pytest.mark.parametrize("seed", [None, 7, "key"])
def test_redaction_styles_survive_hostile_values(seed):
    """Regression: dates at the calendar's edges, absurd years and lone surrogates crashed surrogate/hash."""
    pytest.importorskip("faker")
    from spacy_privfilter.redaction.redactor import Redactor, RedactionConfig
    from spacy_privfilter.spans import CharSpan

    values = [("date", "0001-01-01"), ("date", "9999-12-31"), ("date_of_birth", "31 December 9999"),
              ("date", "\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669\u0660" + "0001-01-01"),
              ("time", "0001-01-01 23:59"), ("first_name", f"{MARKERS[0]}\ud800"), ("email", "a\udfff@b.org")]
    text, spans = "", []
    for label, value in values:
        text += "; "
        spans.append(CharSpan(label, len(text), len(text) + len(value), 0.9))
        text += value
    for style in ("surrogate", "hash", "mask", "tag"):
        redactor = Redactor(RedactionConfig(style=style, seed=seed), hash_key="k" * 16)
        result = redactor.redact(text, spans)
        assert len(result.redactions) == len(values)
        for record, (_, value) in zip(result.redactions, values):
            assert result.redacted_text[record["redacted_start"]:record["redacted_end"]] == record["replacement"]
            assert record["replacement"] != value


def test_logits_are_held_for_a_bounded_group_of_documents():
    """Regression: detect_batch kept [T, num_labels] logits of every text passed at once (GBs for nlp.pipe's
    default 1000-doc batches of long texts with 221 labels); now a group of about 8 model batches at a time."""
    from component_fakes import make_detector

    detector = make_detector(max_tokens=64, max_batch_tokens=512)
    texts = [f"Jane Doe {i} writes to jane{i}@example.org from 555-01{i:02d}. " * (1 + i % 7) for i in range(120)]
    texts[60] = texts[60] * 200  # one document longer than a whole group goes alone
    sizes = []
    real = detector.document_logits
    detector.document_logits = lambda docs: sizes.append(sum(len(d) for d in docs if d is not None)) or real(docs)
    together = detector.detect_batch(texts)
    longest = len(detector.tokenizer.encode(texts[60]))
    assert len(sizes) > 3 and max(sizes) == longest > 8 * 512
    assert sorted(sizes)[-2] <= 8 * 512
    assert together == [detector.detect(text) for text in texts]  # grouping changes nothing in the results
