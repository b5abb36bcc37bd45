"""Deny and allow lists, the merging policy (hand-checked cases and a property), and the list files."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from spacy_privfilter.errors import ConfigError
from spacy_privfilter.recognizers import AllowList, DenyList, Found, Recognizers, merge_found, read_lines
from spacy_privfilter.recognizers.lists import parse_allow, parse_deny
from spacy_privfilter.recognizers.patterns import PRIORITY_DENY, PRIORITY_OTHER, PRIORITY_VALIDATED


def test_deny_terms_match_whole_words_with_case_options():
    deny = DenyList([parse_deny({"term": "Zebra", "label": "company_name"}, "x"),
                     parse_deny({"term": "Project Zebra", "label": "company_name", "ignore_case": True}, "x"),
                     parse_deny({"term": "Ann", "label": "first_name"}, "x")])
    text = "project zebra, Zebra, zebra, Annual report by Ann."
    got = [(text[f.start:f.end], f.label, f.source, f.priority) for f in deny.find(text)]
    assert sorted(got) == sorted([("project zebra", "company_name", "deny", PRIORITY_DENY),
                                  ("Zebra", "company_name", "deny", PRIORITY_DENY),
                                  ("Ann", "first_name", "deny", PRIORITY_DENY)])
    lenient = DenyList([parse_deny({"term": "Zebra", "label": "company_name"}, "x")], ignore_case=True)
    assert [text[f.start:f.end] for f in lenient.find(text)] == ["zebra", "Zebra", "zebra"]


def test_allow_exact_regex_and_partial():
    allow = AllowList([parse_allow("Riverside Clinic", "x"), parse_allow({"regex": r"Ward \d+"}, "x"),
                       parse_allow({"term": "dr", "ignore_case": True}, "x")])
    assert allow.allows("Riverside Clinic") and allow.allows(" Riverside Clinic ")
    assert not allow.allows("riverside clinic")  # case-sensitive by default
    assert allow.allows("Ward 12") and not allow.allows("Ward 12 bed 3")
    assert allow.allows("DR") and not allow.allows("Drew")
    assert not allow.allows("Riverside Clinic Annex") and allow.allows("Riverside Clinic Annex", partial=True)
    assert allow.allows("Ward 12 bed 3", partial=True) and not allow.allows("Drew Smith", partial=True)


def test_resolve_counts_allowed_spans_but_never_drops_deny_terms():
    rec = Recognizers(deny=[{"term": "Riverside Clinic", "label": "company_name"}],
                      allow=[{"term": "Riverside Clinic"}, {"term": "Mercy"}])
    text = "Riverside Clinic and Mercy"
    model = [Found("company_name", 21, 26, 0.9, "model")]
    spans, n_allowed = rec.resolve(text, model + rec.find(text))
    assert n_allowed == 1 and [(s.start, s.end, s.source) for s in spans] == [(0, 16, "deny")]


def F(label, start, end, score=0.5, source="model", priority=PRIORITY_OTHER):
    return Found(label, start, end, score, source, priority)


TEXT = "Card 4111 1111 1111 1111 ok, Jane Doe-Smith, MRN 12345 x"


def test_validated_pattern_beats_model_span_of_another_label():
    card = F("credit_debit_card", 5, 24, 1.0, "pattern:card", PRIORITY_VALIDATED)
    model = F("account_number", 5, 24, 0.99)
    assert merge_found(TEXT, [model, card]) == [card]


def test_same_label_overlaps_unite_with_the_higher_ranked_source():
    a, b = F("last_name", 34, 37, 0.6), F("last_name", 34, 43, 0.4, "pattern:surname")  # "Doe", "Doe-Smith"
    assert merge_found(TEXT, [a, b]) == [F("last_name", 34, 43, 0.6)]


def test_a_partly_beaten_span_keeps_what_lies_outside_the_winner():
    deny = F("last_name", 38, 43, 1.0, "deny", PRIORITY_DENY)          # "Smith"
    model = F("first_name", 29, 43, 0.9)                                # "Jane Doe-Smith"
    stub = F("unique_id", 42, 44, 0.3)                                   # "h," -> "," is left: no letter, dropped
    assert TEXT[29:43] == "Jane Doe-Smith"
    assert merge_found(TEXT, [model, deny, stub]) == [F("first_name", 29, 38, 0.9), deny]


def test_higher_score_wins_within_a_priority_then_longer():
    low, high = F("medical_record_number", 49, 54, 0.7), F("account_number", 45, 54, 0.8, "pattern:acct")
    assert TEXT[45:54] == "MRN 12345"
    assert merge_found(TEXT, [low, high]) == [high]


spans_strategy = st.lists(st.builds(
    lambda label, start, length, score, priority: F(label, start, start + length, score, "s", priority),
    st.sampled_from(["a", "b", "c"]), st.integers(0, len(TEXT) - 1), st.integers(1, 12),
    st.sampled_from([0.2, 0.5, 0.9]), st.sampled_from([1, 2, 3])), max_size=12)


@settings(max_examples=300, deadline=None)
@given(spans_strategy)
def test_merge_properties(spans):
    spans = [s._replace(end=min(s.end, len(TEXT))) for s in spans]
    merged = merge_found(TEXT, spans)
    # No two spans of different labels overlap, and a rerun changes nothing.
    for i, x in enumerate(merged):
        for y in merged[i + 1:]:
            assert x.label == y.label or x.end <= y.start or y.end <= x.start
    assert merge_found(TEXT, merged) == merged
    # Nothing that was covered is uncovered: every letter or digit inside an input span stays inside some span.
    covered = {i for s in merged for i in range(s.start, s.end)}
    assert all(i in covered for s in spans for i in range(s.start, s.end) if TEXT[i].isalnum())


def test_list_files_read_jsonl_and_plain_text_with_file_line_errors(tmp_path):
    allow = tmp_path / "allow.txt"
    allow.write_text("# clinic names\nRiverside Clinic\n\nMercy\n", encoding="utf-8")
    assert [e.term for e in read_lines(allow, "allow")] == ["Riverside Clinic", "Mercy"]
    deny = tmp_path / "deny.jsonl"
    deny.write_text(json.dumps({"term": "Zebra", "label": "company_name"}) + "\n{oops\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{deny}:2: not valid JSON"):
        read_lines(deny, "deny")
    deny.write_text(json.dumps({"term": "Secret Person", "lable": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{deny}:1: unknown deny key") as err:
        read_lines(deny, "deny")
    assert "Secret Person" not in str(err.value)  # a deny term may itself be personal data
    with pytest.raises(ConfigError, match="cannot read the patterns file"):
        read_lines(tmp_path / "missing.jsonl", "patterns")
