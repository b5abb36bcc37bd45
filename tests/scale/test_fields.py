"""Text fields of records: dotted paths, lists of strings, missing/null/non-string fields, shapes of results."""
from __future__ import annotations

import copy

import pytest

from spacy_privfilter.scale.fields import (FieldError, Slot, by_key, drop, extract, parse_keys, replace,
                                           scrubbed_record)

SECRET = "Zebulon Quackenbush"
RECORD = {"id": 7, "subject": "Hi Ann", "note": {"body": "Call Bob", "tags": ["x"]}, "lines": ["one", "two"]}


def test_paths_are_parsed_and_bad_ones_refused():
    assert parse_keys("text") == (("text",),)
    assert parse_keys(["subject", "note.body"]) == (("subject",), ("note", "body"))
    for bad in (["a", "a"], ["note", "note.body"], ["a..b"], [], [".x"]):
        with pytest.raises(ValueError):
            parse_keys(bad)


def test_extract_walks_nested_objects_and_lists_in_key_order():
    slots, texts = extract(RECORD, parse_keys(["lines", "note.body", "subject"]))
    assert texts == ["one", "two", "Call Bob", "Hi Ann"]
    assert slots == [Slot(("lines",), 0), Slot(("lines",), 1), Slot(("note", "body")), Slot(("subject",))]


@pytest.mark.parametrize("record, reason", [
    ({"other": SECRET}, "missing"),
    ({"note": SECRET}, "missing"),               # a path through a string is not found
    ({"note": {"body": None}}, "null"),
    ({"note": {"body": 12345}}, "a int, not a string"),
    ({"note": {"body": [SECRET, None]}}, "item 1 is null"),
    ({"note": {"body": {"deep": SECRET}}}, "a dict, not a string"),
])
def test_unusable_fields_name_the_field_never_the_value(record, reason):
    with pytest.raises(FieldError) as info:
        extract(record, parse_keys("note.body"))
    message = str(info.value)
    assert "'note.body'" in message and reason in message
    assert SECRET not in message and "12345" not in message


def test_skip_leaves_unusable_fields_and_keeps_the_others():
    record = {"subject": None, "body": "text"}
    slots, texts = extract(record, parse_keys(["subject", "body"]), on_missing="skip")
    assert (slots, texts) == ([Slot(("body",))], ["text"])


def test_replace_copies_only_what_it_changes_and_keeps_key_order():
    original = copy.deepcopy(RECORD)
    slots, texts = extract(RECORD, parse_keys(["note.body", "lines"]))
    out = replace(RECORD, slots, [t.upper() for t in texts])
    assert RECORD == original  # the input is left alone
    assert out == {"id": 7, "subject": "Hi Ann", "note": {"body": "CALL BOB", "tags": ["x"]}, "lines": ["ONE", "TWO"]}
    assert list(out) == list(RECORD) and list(out["note"]) == list(RECORD["note"])
    with pytest.raises(ValueError):
        replace(RECORD, slots, ["too few"])


def test_results_are_shaped_like_the_fields():
    paths = parse_keys(["subject", "lines"])
    slots, _ = extract(RECORD, paths)
    assert by_key(paths, slots, ["s", "l0", "l1"]) == {"subject": "s", "lines": ["l0", "l1"]}
    one = parse_keys("subject")
    assert by_key(one, extract(RECORD, one)[0], [["span"]]) == ["span"]   # one key: its value alone
    assert by_key(one, [], []) == []                                        # skipped field: nothing found
    assert scrubbed_record({"text": "a"}, parse_keys("text"), [Slot(("text",))], ["b"], [[{"label": "x"}]]) == \
        {"text": "b", "redactions": [{"label": "x"}]}


def test_drop_removes_nested_fields_from_a_copy():
    out = drop(RECORD, parse_keys(["note.body", "subject", "absent.path"]))
    assert out == {"id": 7, "note": {"tags": ["x"]}, "lines": ["one", "two"]}
    assert RECORD["note"]["body"] == "Call Bob"
