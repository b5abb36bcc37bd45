"""Oracle logits from the shared data through the whole pipeline: doc spans equal gold, nlp.evaluate F = 1.0,
and a deliberately corrupted prediction scores exactly what an independent count says."""
from __future__ import annotations

import json

import numpy as np
import pytest
import spacy
from spacy.training import Example

from spacy_privfilter.backends.fake import FakeBackend
from spacy_privfilter.detector import Detector
from spacy_privfilter.testing import NEMOTRON_CLASSES, bioes_labels
from spacy_privfilter.tokens import get_tokenizer

ID2LABEL = bioes_labels(NEMOTRON_CLASSES)
LABEL2ID = {label: i for i, label in enumerate(ID2LABEL)}
PER_FILE = {"synthetic_clinical_notes_dev.jsonl": 40, "presidio_generated_large.jsonl": 40,
            "asq_phi_clinical_queries_dev.jsonl": 20}


def token_tags(text: str, spans: list[dict]):
    """(input_ids, tags) marking every token that overlaps a span with B/I/E/S, or None when the model's own
    tokens cannot express the spans (a token shared by two spans, or one reaching past a span's edge)."""
    tokens = get_tokenizer().encode(text)
    tags = ["O"] * len(tokens)
    for span in spans:
        hit = np.flatnonzero((tokens.char_starts < span["end"]) & (tokens.char_ends > span["start"]))
        if not len(hit) or any(tags[i] != "O" for i in hit):
            return None
        start, end = int(tokens.char_starts[hit[0]]), int(tokens.char_ends[hit[-1]])
        start += len(text[start:end]) - len(text[start:end].lstrip())
        end -= len(text[start:end]) - len(text[start:end].rstrip())
        if (start, end) != (span["start"], span["end"]):
            return None
        names = ["S"] if len(hit) == 1 else ["B"] + ["I"] * (len(hit) - 2) + ["E"]
        for i, prefix in zip(hit, names):
            tags[i] = f"{prefix}-{span['label']}"
    return tokens.input_ids, tags


def oracle_logits(tags: list[str]) -> np.ndarray:
    logits = np.zeros((len(tags), len(ID2LABEL)), dtype=np.float32)
    logits[np.arange(len(tags)), [LABEL2ID[t] for t in tags]] = 20.0
    return logits


@pytest.fixture(scope="module")
def records(shared_data_files):
    """Records whose labels are all Nemotron classes and whose spans the model's tokens can express."""
    out, skipped = [], 0
    for path in shared_data_files:
        wanted = PER_FILE.get(path.name, 0)
        taken = 0
        for line in path.open(encoding="utf-8"):
            if taken >= wanted:
                break
            record = json.loads(line)
            if not all(s["label"] in NEMOTRON_CLASSES for s in record["spans"]):
                continue
            if token_tags(record["text"], record["spans"]) is None:
                skipped += 1
                continue
            out.append(record)
            taken += 1
    assert len(out) >= 90 and skipped <= 2
    return out


def pipeline_for(records, *, corrupt=None):
    """privacy_filter over a FakeBackend whose table holds oracle logits of the (maybe corrupted) spans."""
    table = {}
    for record in records:
        spans = corrupt(record["spans"]) if corrupt else record["spans"]
        input_ids, tags = token_tags(record["text"], spans)
        table[tuple(int(i) for i in input_ids)] = oracle_logits(tags)
    nlp = spacy.blank("en")
    component = nlp.add_pipe("privacy_filter", config={"set_ents": True})
    component.detector = Detector(FakeBackend(ID2LABEL, table=table))
    return nlp


def examples_for(nlp, records):
    examples = []
    for record in records:
        reference = nlp.make_doc(record["text"])
        gold = [reference.char_span(s["start"], s["end"], label=s["label"], alignment_mode="expand")
                for s in record["spans"]]
        reference.spans["pii"] = gold
        reference.ents = gold
        examples.append(Example(nlp.make_doc(record["text"]), reference))
    return examples


def test_oracle_spans_equal_gold_and_f_is_one(records):
    nlp = pipeline_for(records)
    examples = examples_for(nlp, records)
    n_gold = 0
    for example, doc in zip(examples, nlp.pipe(r["text"] for r in records)):
        gold = [(s.label_, s.start, s.end) for s in example.reference.spans["pii"]]
        assert [(s.label_, s.start, s.end) for s in doc.spans["pii"]] == gold
        assert [(s.label_, s.start, s.end) for s in doc.ents] == gold
        assert np.all(doc.spans["pii"].attrs["scores"] > 0.99)
        n_gold += len(gold)
    assert n_gold > 500
    scores = nlp.evaluate(examples)
    assert scores["spans_pii_p"] == scores["spans_pii_r"] == scores["spans_pii_f"] == 1.0
    assert scores["ents_f"] == 1.0
    assert all(v["f"] == 1.0 for v in scores["spans_pii_per_type"].values())
    assert len(scores["spans_pii_per_type"]) >= 15


def _corrupt(spans):
    """Drop every 4th span; give every 7th (of the rest) a different class."""
    out = []
    for k, span in enumerate(spans):
        if k % 4 == 3:
            continue
        if k % 7 == 5:
            other = NEMOTRON_CLASSES[(NEMOTRON_CLASSES.index(span["label"]) + 1) % len(NEMOTRON_CLASSES)]
            span = dict(span, label=other)
        out.append(span)
    return out


def test_corrupted_prediction_scores_the_independent_count(records):
    nlp = pipeline_for(records, corrupt=_corrupt)
    tp = fp = fn = 0
    per_label = {"first_name": [0, 0, 0]}
    for record in records:
        for k, span in enumerate(record["spans"]):
            label = span["label"]
            counts = per_label.setdefault(label, [0, 0, 0])
            if k % 4 == 3:
                fn += 1
                counts[2] += 1
            elif k % 7 == 5:
                fp += 1
                fn += 1
                counts[2] += 1
                wrong = NEMOTRON_CLASSES[(NEMOTRON_CLASSES.index(label) + 1) % len(NEMOTRON_CLASSES)]
                per_label.setdefault(wrong, [0, 0, 0])[1] += 1
            else:
                tp += 1
                counts[0] += 1
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    f = 2 * precision * recall / (precision + recall)
    assert 0.5 < f < 0.95  # the corruption really bites
    scores = nlp.evaluate(examples_for(nlp, records))
    assert scores["spans_pii_p"] == pytest.approx(precision, abs=1e-12)
    assert scores["spans_pii_r"] == pytest.approx(recall, abs=1e-12)
    assert scores["spans_pii_f"] == pytest.approx(f, abs=1e-12)
    label_tp, label_fp, label_fn = per_label["first_name"]
    p, r = label_tp / (label_tp + label_fp), label_tp / (label_tp + label_fn)
    assert scores["spans_pii_per_type"]["first_name"]["p"] == pytest.approx(p, abs=1e-12)
    assert scores["spans_pii_per_type"]["first_name"]["r"] == pytest.approx(r, abs=1e-12)
    assert scores["ents_f"] == pytest.approx(f, abs=1e-12)  # non-overlapping spans: ents score the same
