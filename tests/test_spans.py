"""Tag paths -> character spans, and the oracle-logit round trip over the shared gold data."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from spacy_privfilter.decode import log_softmax, viterbi
from spacy_privfilter.labels import LabelScheme
from spacy_privfilter.errors import ConfigError
from spacy_privfilter.spans import CharSpan, SpanFilter, tags_to_char_spans, trim_whitespace
from spacy_privfilter.tokens import get_tokenizer

SCHEME = LabelScheme.from_classes(["name", "email"])
ID = SCHEME.label2id


def one_hot_log_probs(tags, num_labels, high=20.0):
    logits = np.zeros((len(tags), num_labels), dtype=np.float32)
    logits[np.arange(len(tags)), tags] = high
    return log_softmax(logits)


def test_trim_whitespace():
    assert trim_whitespace("  ab \n", 0, 6) == (2, 4)
    assert trim_whitespace("   ", 0, 3)[0] == trim_whitespace("   ", 0, 3)[1]
    assert trim_whitespace("\u3000x\u00a0", 0, 3) == (1, 2)  # ideographic and no-break spaces count


def test_spans_scores_trimming_and_thresholds():
    text = "Hi Ann Lee, mail a@b.c now"
    starts = np.array([0, 2, 6, 10, 11, 16, 23])
    ends = np.array([2, 6, 10, 11, 16, 23, 26])  # "Hi", " Ann", " Lee", ",", " mail", " a@b.c ", "now"
    tags = np.array([ID[t] for t in ["O", "B-name", "E-name", "O", "O", "S-email", "O"]])
    logits = np.zeros((7, SCHEME.num_labels), dtype=np.float32)
    logits[np.arange(7), tags] = [5.0, 2.0, 4.0, 5.0, 5.0, 1.0, 5.0]
    log_probs = log_softmax(logits)
    spans = tags_to_char_spans(text, tags, log_probs, starts, ends, SCHEME)
    probs = np.exp(log_probs[np.arange(7), tags])
    assert [(s.label, text[s.start:s.end]) for s in spans] == [("name", "Ann Lee"), ("email", "a@b.c")]
    assert spans[0].score == pytest.approx((probs[1] + probs[2]) / 2)
    assert spans[1].score == pytest.approx(probs[5])
    assert all(isinstance(s, CharSpan) for s in spans)
    cut = (spans[0].score + spans[1].score) / 2
    high = tags_to_char_spans(text, tags, log_probs, starts, ends, SCHEME, span_filter=SpanFilter(cut))
    assert [s.label for s in high] == ["name"]
    per_label = SpanFilter.checked(SCHEME.classes, threshold=cut, label_thresholds={"name": 1.0, "email": 0.0})
    assert [s.label for s in tags_to_char_spans(text, tags, log_probs, starts, ends, SCHEME,
                                                span_filter=per_label)] == ["email"]
    only_name = SpanFilter.checked(SCHEME.classes, labels=["name"])
    assert [s.label for s in tags_to_char_spans(text, tags, log_probs, starts, ends, SCHEME,
                                                span_filter=only_name)] == ["name"]
    assert only_name.apply(spans) == spans[:1]


def test_span_filter_checks_names_and_numbers():
    with pytest.raises(ConfigError, match="labels has unknown classes: ssn"):
        SpanFilter.checked(SCHEME.classes, labels=["ssn", "name"])
    with pytest.raises(ConfigError, match="label_thresholds has unknown classes: passport"):
        SpanFilter.checked(SCHEME.classes, label_thresholds={"passport": 0.5})
    for bad in (1.5, -0.1, float("nan"), True, "0.5"):
        with pytest.raises(ConfigError, match="threshold"):
            SpanFilter.checked(SCHEME.classes, threshold=bad)


def test_whitespace_only_span_is_dropped_and_shared_character_is_not_reused():
    text = "a  \U0001d518b"
    # tokens: "a", "  ", three pieces of the 4-byte character (all (3, 4)), "b"
    starts = np.array([0, 1, 3, 3, 3, 4])
    ends = np.array([1, 3, 4, 4, 4, 5])
    tags = np.array([ID[t] for t in ["O", "S-name", "B-email", "E-email", "B-name", "E-name"]])
    spans = tags_to_char_spans(text, tags, one_hot_log_probs(tags, SCHEME.num_labels), starts, ends, SCHEME)
    assert [(s.label, s.start, s.end) for s in spans] == [("email", 3, 4), ("name", 4, 5)]


# ------------------------------------------------------------------------------------- oracle round trip
def gold_tags(tokenized, spans, scheme):
    """BIOES tag per token for gold char spans; None when two spans share a token."""
    tags = np.full(len(tokenized), scheme.outside_id, dtype=np.int64)
    taken = np.zeros(len(tokenized), dtype=bool)
    ids = scheme.label2id
    for span in spans:
        toks = np.nonzero((tokenized.char_starts < span["end"]) & (tokenized.char_ends > span["start"]))[0]
        if taken[toks].any():
            return None
        taken[toks] = True
        label = span["label"]
        if len(toks) == 1:
            tags[toks[0]] = ids[f"S-{label}"]
        else:
            tags[toks] = ids[f"I-{label}"]
            tags[toks[0]], tags[toks[-1]] = ids[f"B-{label}"], ids[f"E-{label}"]
    return tags


def test_oracle_logits_round_trip(shared_data_files):
    records = [json.loads(line) for path in shared_data_files
               for line in path.read_text().splitlines() if line]
    scheme = LabelScheme.from_classes(sorted({s["label"] for r in records for s in r["spans"]}))
    tokenizer = get_tokenizer()
    counts = Counter()
    for record in records:
        text = record["text"]
        tokenized = tokenizer.encode(text)
        tags = gold_tags(tokenized, record["spans"], scheme)
        counts["records"] += 1
        counts["gold spans"] += len(record["spans"])
        if tags is None:
            counts["records skipped: two gold spans share a token"] += 1
            continue
        log_probs = one_hot_log_probs(tags, scheme.num_labels)
        decoded = viterbi(log_probs, scheme)
        assert decoded.tolist() == tags.tolist(), record["id"]
        got = tags_to_char_spans(text, decoded, log_probs, tokenized.char_starts, tokenized.char_ends, scheme)
        assert len(got) == len(record["spans"]), record["id"]
        for span, gold in zip(got, record["spans"]):
            assert span.label == gold["label"] and span.score > 0.999
            if (span.start, span.end) == (gold["start"], gold["end"]):
                counts["exact"] += 1
                continue
            # Only a gold boundary inside a token may differ, and the token-expanded span must cover it.
            assert span.start <= gold["start"] and span.end >= gold["end"], record["id"]
            for side, extended, on_boundary in (
                    ("start", span.start < gold["start"], np.any(tokenized.char_starts == gold["start"])),
                    ("end", span.end > gold["end"], np.any(tokenized.char_ends == gold["end"]))):
                if extended:
                    assert not on_boundary, record["id"]
                    counts[f"covered, gold {side} inside a token"] += 1
    print("\noracle round trip: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    assert counts["records"] == len(records) and counts["exact"] > 0.95 * counts["gold spans"]
