"""Scoring functions: hand-checked small cases, then the shared data with oracle and corrupted predictions.

Expected figures for the corrupted predictions are derived from how the corruption was built (which spans were
dropped, shifted or relabelled), not from the scoring code.
"""
from __future__ import annotations

import json
from collections import Counter

import pytest

from spacy_privfilter import CharSpan
from spacy_privfilter.evaluate import (Evaluation, annotated_labels, exact_counts, leakage_counts, overlap_counts,
                                       span_problem)


def _span(start, end, label):
    return {"start": start, "end": end, "label": label}


TEXT = "Anna Smith lives at 12 Oak Street, Boston."
#       0123456789012345678901234567890123456789012
GOLD = [_span(0, 4, "first_name"), _span(5, 10, "last_name"), _span(20, 33, "street_address"), _span(35, 41, "city")]


def test_exact_counts_per_label():
    pred = [CharSpan("first_name", 0, 4, 0.9),        # exact hit
            CharSpan("last_name", 5, 9, 0.8),         # one char short: exact miss, overlap hit
            CharSpan("city", 20, 33, 0.7)]            # right place, wrong label
    counts = exact_counts(GOLD, pred)
    assert (counts["first_name"].precision, counts["first_name"].recall) == (1.0, 1.0)
    assert (counts["last_name"].n_pred, counts["last_name"].pred_matched, counts["last_name"].n_gold) == (1, 0, 1)
    assert (counts["city"].n_pred, counts["city"].pred_matched, counts["city"].n_gold) == (1, 0, 1)
    assert counts["street_address"].recall == 0.0 and counts["street_address"].n_pred == 0


def test_overlap_counts_need_same_label_and_shared_token():
    pred = [CharSpan("last_name", 5, 9, 0.8), CharSpan("city", 20, 33, 0.7),
            CharSpan("street_address", 23, 26, 0.5),  # "Oak" inside the street
            CharSpan("city", 36, 41, 0.5)]            # "oston": inside the token "Boston"
    counts = overlap_counts(TEXT, GOLD, pred)
    assert counts["last_name"].pred_matched == 1 and counts["last_name"].gold_matched == 1
    assert counts["street_address"].gold_matched == 1
    # one city prediction overlaps the gold city, the other sits on the street: 1 of 2 predictions correct.
    assert (counts["city"].n_pred, counts["city"].pred_matched, counts["city"].gold_matched) == (2, 1, 1)
    assert counts["first_name"].recall == 0.0


def test_overlap_does_not_count_touching_spans():
    # "Anna" ends where " " starts; a span on "Smith" shares no token with "Anna".
    counts = overlap_counts(TEXT, [_span(0, 4, "first_name")], [CharSpan("first_name", 5, 10, 1.0)])
    assert counts["first_name"].pred_matched == 0 and counts["first_name"].gold_matched == 0


def test_leakage_counts_non_whitespace_gold_chars_not_covered_by_any_label():
    gold = [_span(0, 10, "name")]                      # "Anna Smith": 9 non-space characters
    pred = [CharSpan("first_name", 0, 4, 1.0), CharSpan("city", 7, 9, 1.0)]  # covers "Anna" and "it"
    leak = leakage_counts(TEXT, gold, pred)
    assert (leak.gold_chars, leak.leaked_chars) == (9, 3)  # "S", "m", "h" leak
    assert leak.share == pytest.approx(3 / 9)


def test_empty_sides_are_not_errors():
    ev = Evaluation()
    ev.add("no pii here", [], [])
    assert ev.overall().precision == 1.0 and ev.overall().recall == 1.0 and ev.leakage.share == 0.0
    # nothing predicted for a label that has gold spans: 0, not a vacuous 1; and the other way round
    missed = exact_counts([_span(0, 2, "city")], [CharSpan("zip", 3, 5, 1.0)])
    assert (missed["city"].precision, missed["city"].recall) == (0.0, 0.0)
    assert (missed["zip"].precision, missed["zip"].recall, missed["zip"].f1) == (0.0, 0.0, 0.0)


def test_ignore_unannotated_labels_drops_only_unannotated_predictions():
    records = [{"text": TEXT, "spans": GOLD, "source": "a"}, {"text": "x", "spans": [], "source": "b"}]
    annotated = annotated_labels(records)
    assert annotated["a"] == {"first_name", "last_name", "street_address", "city"} and annotated["b"] == set()
    pred = [CharSpan("first_name", 0, 4, 1.0), CharSpan("age", 11, 16, 1.0), CharSpan("city", 0, 2, 1.0)]
    plain, ignoring = Evaluation(), Evaluation(annotated=annotated)
    for ev in (plain, ignoring):
        ev.add(TEXT, GOLD, pred, source="a")
    assert plain.overall().n_pred == 3 and "age" in plain.labels()
    assert ignoring.overall().n_pred == 2 and ignoring.n_ignored == 1 and "age" not in ignoring.labels()
    assert ignoring.leakage == plain.leakage  # an ignored prediction is still redacted


def test_span_problem_names_offsets_not_text():
    assert span_problem(TEXT, _span(0, 4, "x")) is None
    message = span_problem(TEXT, _span(40, 99, "city"))
    assert "40:99" in message and "Boston" not in message
    assert span_problem(TEXT, {"start": 1}) is not None


def test_report_dict_and_table():
    ev = Evaluation()
    ev.add(TEXT, GOLD, [CharSpan("first_name", 0, 4, 1.0)])
    report = ev.as_dict()
    assert report["exact"]["overall"]["recall"] == pytest.approx(0.25)
    assert report["exact"]["per_label"]["first_name"]["f1"] == 1.0
    json.dumps(report)
    table = ev.format_table()
    assert "first_name" in table and "overall" in table and "leakage" in table


# -- the shared data sets ----------------------------------------------------------------------------------------

def _records(path):
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def corrupt(records):
    """Drop every 5th gold span, trim the start of every 7th (length >= 2), relabel every 11th.

    Returns the predictions and the bookkeeping needed to know the true figures.
    """
    preds, book = [], Counter()
    per_label = Counter()  # label -> exact hits
    leaked = 0
    k = 0
    for record in records:
        out = []
        for span in record["spans"]:
            k += 1
            s, e, label = span["start"], span["end"], span["label"]
            if k % 5 == 0:
                book["dropped"] += 1
                leaked += sum(not c.isspace() for c in record["text"][s:e])
                continue
            if k % 7 == 0 and e - s >= 2:
                book["shifted"] += 1
                leaked += 1  # spans never start on whitespace: the trimmed first character leaks
                out.append(_span(s + 1, e, label))
                continue
            if k % 11 == 0:
                book["relabelled"] += 1
                out.append(_span(s, e, "zz_wrong"))
                continue
            per_label[label] += 1
            out.append(dict(span))
        preds.append(out)
    book["gold"] = k
    return preds, book, per_label, leaked


def _evaluate(records, preds, **kwargs):
    ev = Evaluation(**kwargs)
    for record, pred in zip(records, preds):
        ev.add(record["text"], record["spans"], pred, source=record.get("source", ""))
    return ev


def test_oracle_predictions_score_one(shared_data_files):
    for path in shared_data_files:
        records = _records(path)
        ev = _evaluate(records, [r["spans"] for r in records])
        for mode in ("exact", "overlap"):
            overall = ev.overall(mode)
            assert (overall.precision, overall.recall, overall.f1) == (1.0, 1.0, 1.0), (path.name, mode)
        assert ev.leakage.leaked_chars == 0 and ev.leakage.gold_chars > 0


def test_corrupted_predictions_give_the_constructed_figures(shared_data_files):
    for path in shared_data_files:
        records = _records(path)
        preds, book, per_label_hits, leaked = corrupt(records)
        ev = _evaluate(records, preds)
        n_gold, n_pred = book["gold"], book["gold"] - book["dropped"]
        hits = n_gold - book["dropped"] - book["shifted"] - book["relabelled"]
        exact = ev.overall("exact")
        assert (exact.n_gold, exact.n_pred, exact.pred_matched) == (n_gold, n_pred, hits), path.name
        assert exact.precision == pytest.approx(hits / n_pred)
        assert exact.recall == pytest.approx(hits / n_gold)
        # Token overlap forgives the trimmed spans (they keep their last token) but not the relabelled ones.
        overlap = ev.overall("overlap")
        assert overlap.pred_matched == hits + book["shifted"]
        assert overlap.gold_matched == hits + book["shifted"]
        assert ev.exact["zz_wrong"].n_pred == book["relabelled"] and ev.exact["zz_wrong"].pred_matched == 0
        for label, count in per_label_hits.items():
            assert ev.exact[label].pred_matched == count
        gold_chars = sum(not c.isspace() for r in records for s in r["spans"] for c in r["text"][s["start"]:s["end"]])
        assert (ev.leakage.gold_chars, ev.leakage.leaked_chars) == (gold_chars, leaked)


def test_ignore_unannotated_on_asq_phi(shared_data_files):
    asq = [p for p in shared_data_files if p.name.startswith("asq_phi")]
    if not asq:
        pytest.skip("ASQ-PHI dev file not present")
    records = _records(asq[0])
    # ASQ-PHI never annotates ages: an "age" prediction on every record is ignored with the flag.
    preds = [r["spans"] + [_span(0, 1, "age")] for r in records]
    annotated = annotated_labels(records)
    assert "age" not in annotated[records[0]["source"]]
    ignoring = _evaluate(records, preds, annotated=annotated)
    plain = _evaluate(records, preds)
    assert ignoring.overall().precision == 1.0 and ignoring.n_ignored == len(records)
    n_gold = sum(len(r["spans"]) for r in records)
    assert plain.overall().precision == pytest.approx(n_gold / (n_gold + len(records)))
