"""Leakage, consistency and reversibility over every record of ../shared/data, gold spans in doc.spans["pii"].

No model: the gold spans are what a perfect detector would give, so anything that survives is the redactor's
fault. Docs are built once; each style is one pass over ~2,900 records.
"""
import json
import re
from collections import defaultdict

import pytest
import spacy
from spacy.tokens import Doc
from spacy.util import get_words_and_spaces

from spacy_privfilter.redaction.redactor import restore
from spacy_privfilter.redaction.values import normalize_value
from spacy_privfilter.pipeline.privacy_redactor import PrivacyRedactor

HASH_KEY = "leakage-test-key"
VARIANTS = {
    "tag": {"style": "tag"},
    "tag_numbered": {"style": "tag", "tag_format": "[{LABEL}_{n}]"},
    "mask": {"style": "mask"},
    "mask_keep_last": {"style": "mask", "keep_last": 4, "mask_char": "#"},
    "hash": {"style": "hash", "hash_key": HASH_KEY},
    "surrogate": {"style": "surrogate"},
    "surrogate_seeded": {"style": "surrogate", "seed": "corpus-seed"},
    "remove": {"style": "remove"},
}


def gold_doc(vocab, record) -> Doc:
    """A Doc whose token boundaries include every gold span boundary, so the spans keep their exact offsets."""
    text = record["text"]
    cuts = sorted({0, len(text)} | {s["start"] for s in record["spans"]} | {s["end"] for s in record["spans"]})
    words = [word for a, b in zip(cuts, cuts[1:]) for word in text[a:b].split()]
    words, spaces = get_words_and_spaces(words, text)
    doc = Doc(vocab, words=words, spaces=spaces)
    doc.spans["pii"] = [doc.char_span(s["start"], s["end"], s["label"]) for s in record["spans"]]
    return doc


@pytest.fixture(scope="module")
def corpus(shared_data_files):
    nlp = spacy.blank("en")
    records = [json.loads(line) for path in shared_data_files for line in path.open(encoding="utf-8") if line.strip()]
    docs = [gold_doc(nlp.vocab, record) for record in records]
    for doc, record in zip(docs, records):
        assert doc.text == record["text"]
        assert [(s.start_char, s.end_char) for s in doc.spans["pii"]] == \
            [(s["start"], s["end"]) for s in record["spans"]]
    return records, docs


def run(docs, **options):
    """Redact every doc; return plain copies (the docs are reused by the next run)."""
    redactor = PrivacyRedactor(None, **options)
    out = []
    for doc in docs:
        redactor(doc)
        out.append((doc._.redacted_text, doc._.redactions, doc._.redaction_mapping))
    return out


@pytest.fixture(scope="module")
def results(corpus):
    """Each variant run once over the corpus, with keep_mapping (it adds originals, replacements are unchanged)."""
    _, docs = corpus
    cache = {}

    def get(variant):
        if variant not in cache:
            cache[variant] = run(docs, keep_mapping=True, **VARIANTS[variant])
        return cache[variant]

    return get


def find_leaks(text, redacted, redactions):
    """(start, end) of each gold value of >= 3 characters found at or around its replacement."""
    leaks = []
    folded = redacted.casefold()
    for r in redactions:
        value = text[r["start"]:r["end"]].casefold()
        if len(value.strip()) < 3:
            continue
        # Any occurrence of the value that overlaps the replacement (or straddles a removal) is a leak;
        # occurrences wholly inside kept text are other, unannotated mentions.
        lo, hi = r["redacted_start"], r["redacted_end"]
        at = folded.find(value, max(0, lo - len(value) + 1))
        while at != -1 and at < max(hi, lo + 1):
            if (at < hi and at + len(value) > lo) if hi > lo else (at < lo < at + len(value)):
                leaks.append((r["start"], r["end"]))
            at = folded.find(value, at + 1)
    return leaks


def test_corpus_is_complete(corpus):
    records, _ = corpus
    assert len(records) >= 2800 and sum(len(r["spans"]) for r in records) >= 9000


def test_leak_finder_finds_leaks():
    text = "Call Cobb now"
    record = {"start": 5, "end": 9, "label": "last_name"}
    kept = dict(record, redacted_start=5, redacted_end=9)
    assert find_leaks(text, text, [kept]) == [(5, 9)]
    assert find_leaks(text, "Call [xCOBBx] now", [dict(record, redacted_start=5, redacted_end=13)]) == [(5, 9)]
    assert find_leaks(text, "Call Co bb now", [dict(record, redacted_start=7, redacted_end=7)]) == []
    assert find_leaks(text, "Call Cobb now", [dict(record, redacted_start=7, redacted_end=7)]) == [(5, 9)]
    assert find_leaks("Cobb, Cobb", "Cobb, [X]", [{"start": 6, "end": 10, "redacted_start": 6,
                                                   "redacted_end": 9}]) == []


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_no_gold_value_survives_other_text_is_kept_and_restore_is_exact(corpus, results, variant):
    records, _ = corpus
    leaks = []
    for record, (redacted, redactions, _) in zip(records, results(variant)):
        text = record["text"]
        assert [(r["start"], r["end"], r["label"]) for r in redactions] == \
            [(s["start"], s["end"], s["label"]) for s in record["spans"]]  # gold spans never touch: one each
        cursor = redacted_cursor = 0
        for r in redactions:
            # Everything between replacements is the original text, and the offsets point at the replacement.
            assert redacted[redacted_cursor:r["redacted_start"]] == text[cursor:r["start"]]
            assert redacted[r["redacted_start"]:r["redacted_end"]] == r["replacement"]
            cursor, redacted_cursor = r["end"], r["redacted_end"]
        assert redacted[redacted_cursor:] == text[cursor:]
        leaks += [(record["id"], *leak) for leak in find_leaks(text, redacted, redactions)]
        assert restore(redacted, redactions).encode("utf-8") == text.encode("utf-8")
    assert leaks == []


@pytest.mark.parametrize("variant", ["tag_numbered", "hash", "surrogate_seeded"])
def test_dict_mapping_restores_when_replacements_are_distinct(corpus, results, variant):
    records, _ = corpus
    exact = total = 0
    for record, (redacted, _, mapping) in zip(records, results(variant)):
        values = {record["text"][s["start"]:s["end"]] for s in record["spans"]}
        if len({normalize_value(v) for v in values}) != len(values):
            continue  # case variants share one replacement, so a dict cannot tell them apart
        total += 1
        exact += restore(redacted, mapping) == record["text"]
    assert total > 2700
    assert exact / total > 0.99, (exact, total)  # misses: a surrogate that also occurs in the kept text


@pytest.mark.parametrize("variant", ["tag_numbered", "hash", "surrogate", "surrogate_seeded"])
def test_same_value_same_replacement_and_different_values_differ_within_a_doc(corpus, results, variant):
    records, _ = corpus
    checked = 0
    for record, (_, redactions, _) in zip(records, results(variant)):
        by_value = defaultdict(set)
        for r in redactions:
            key = (r["label"], normalize_value(record["text"][r["start"]:r["end"]]))
            by_value[key].add(r["replacement"].casefold())
        checked += sum(1 for reps in by_value.values() if len(reps) == 1)
        assert all(len(reps) == 1 for reps in by_value.values())
        per_label = defaultdict(list)
        for (label, _), reps in by_value.items():
            per_label[label].extend(reps)
        assert all(len(reps) == len(set(reps)) for reps in per_label.values())
    assert checked > 5000


def test_hash_is_stable_across_docs_and_changes_with_the_key(corpus, results):
    records, docs = corpus
    first = {}
    for record, (_, redactions, _) in zip(records, results("hash")):
        for r in redactions:
            value = normalize_value(record["text"][r["start"]:r["end"]])
            assert first.setdefault(value, r["replacement"]) == r["replacement"]
    other = {}
    for record, (_, redactions, _) in zip(records, run(docs, style="hash", hash_key="another-key-0123456789")):
        for r in redactions:
            other[normalize_value(record["text"][r["start"]:r["end"]])] = r["replacement"]
    assert len(first) > 4000
    assert all(first[value] != other[value] for value in first)


def test_seeded_surrogates_repeat_across_docs_and_runs_and_change_with_the_seed(corpus, results):
    records, docs = corpus
    seeded = results("surrogate_seeded")
    runs = [[out[0] for out in seeded]] + [[out[0] for out in run(docs, style="surrogate", seed=seed)]
                                           for seed in ("corpus-seed", "s2")]
    assert runs[0] == runs[1]
    changed = sum(a != b for a, b in zip(runs[0], runs[2]))
    with_spans = sum(1 for r in records if r["spans"])
    assert changed >= 0.95 * with_spans
    across = defaultdict(set)
    for record, (_, redactions, _) in zip(records, seeded):
        for r in redactions:
            across[(r["label"], normalize_value(record["text"][r["start"]:r["end"]]))].add(r["replacement"].casefold())
    repeated = [reps for reps in across.values() if reps]
    consistent = sum(len(reps) == 1 for reps in repeated)
    # Exceptions only where a surrogate was already taken by another value of the same doc (then it is re-drawn).
    assert consistent / len(repeated) > 0.995, (consistent, len(repeated))


def test_unseeded_surrogates_differ_between_docs(corpus):
    records, docs = corpus
    first = [out[0] for out in run(docs[:300], style="surrogate")]
    second = [out[0] for out in run(docs[:300], style="surrogate")]
    with_spans = sum(1 for r in records[:300] if r["spans"])
    assert sum(a != b for a, b in zip(first, second)) >= 0.95 * with_spans


def word_leaks(text, redactions, spans):
    """Gold values of the doc (whole, or a whitespace-separated part of 3+ characters) standing as words in a
    surrogate. Parts are not checked in dates and times, which keep their month names and years by design."""
    from spacy_privfilter.redaction.surrogates import SHIFTED, STRUCTURAL_WORDS, surrogate_class

    values = {normalize_value(text[s["start"]:s["end"]]) for s in spans}
    wholes = {v for v in values if len(v) >= 3}
    parts = {p.strip(".,;:!?()[]{}\"'") for v in values for p in v.split()}
    parts = {p for p in parts if len(p) >= 3 and p not in STRUCTURAL_WORDS}
    leaks = []
    for r in redactions:
        folded = normalize_value(r["replacement"])
        found = [v for v in wholes | (set() if surrogate_class(r["label"]) in SHIFTED else parts)
                 if re.search(rf"(?<!\w){re.escape(v)}(?!\w)", folded)]
        leaks += [(r["start"], r["end"], r["label"]) for _ in found[:1]]
    return leaks


@pytest.mark.parametrize("variant", ["surrogate", "surrogate_seeded"])
def test_no_value_of_the_document_stands_as_a_word_in_a_surrogate(corpus, results, variant):
    records, _ = corpus
    leaks = []
    for record, (_, redactions, _) in zip(records, results(variant)):
        leaks += [(record["id"], *leak) for leak in word_leaks(record["text"], redactions, record["spans"])]
    assert leaks == []


def test_word_leak_finder_finds_a_kept_surname():
    text = "John Smith met Ann."
    spans = [{"start": 0, "end": 10, "label": "person"}, {"start": 15, "end": 18, "label": "first_name"}]
    assert word_leaks(text, [{"start": 0, "end": 10, "label": "person", "replacement": "Mark Smith"}], spans)
    assert word_leaks(text, [{"start": 15, "end": 18, "label": "first_name", "replacement": "Ann"}], spans)
    assert not word_leaks(text, [{"start": 0, "end": 10, "label": "person", "replacement": "Mark Smithers"}], spans)
