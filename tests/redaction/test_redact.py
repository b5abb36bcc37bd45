"""Pure redaction functions: merge rule, styles, offsets, restore, config errors (no spaCy, no model)."""
import hmac
import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spacy_privfilter.errors import ConfigError
from spacy_privfilter.redaction.redactor import RedactionConfig, Redactor, merge_spans, redact_text, restore
from spacy_privfilter.redaction.values import hash_value, mask_value, normalize_value
from spacy_privfilter.spans import CharSpan

TEXT = "Call John Smith at 555-201-7731 or john@x.org. John Smith again."
#       0123456789012345678901234567890123456789012345678901234567890123
SPANS = [("first_name", 5, 9), ("last_name", 10, 15), ("phone_number", 19, 31), ("email", 35, 45),
         ("first_name", 47, 51), ("last_name", 52, 57)]


def test_spans_fixture_matches_text():
    assert [TEXT[s:e] for _, s, e in SPANS] == ["John", "Smith", "555-201-7731", "john@x.org", "John", "Smith"]


def test_merge_overlapping_takes_higher_score_and_covers_union():
    merged = merge_spans([CharSpan("a", 0, 5, 0.4), CharSpan("b", 3, 12, 0.9), CharSpan("c", 20, 25, 0.5)])
    assert merged == [CharSpan("b", 0, 12, 0.9), CharSpan("c", 20, 25, 0.5)]


def test_merge_equal_scores_takes_longer_then_earlier():
    assert merge_spans([("short", 2, 4), ("long", 0, 9)]) == [CharSpan("long", 0, 9, 1.0)]
    assert merge_spans([("first", 0, 4), ("second", 2, 6)]) == [CharSpan("first", 0, 6, 1.0)]


def test_merge_touching_spans_and_drops_empty():
    assert merge_spans([("x", 0, 3), ("y", 3, 8, 0.9), ("z", 10, 10)]) == [CharSpan("x", 0, 8, 1.0)]


def test_merge_chain_of_overlaps_is_one_group():
    assert merge_spans([("a", 0, 4), ("b", 3, 7), ("c", 6, 10), ("d", 11, 12)]) == \
        [CharSpan("a", 0, 10, 1.0), CharSpan("d", 11, 12, 1.0)]


@pytest.mark.parametrize("bad", [("x", -1, 2), ("x", 5, 3), ("x", 0, 99)])
def test_invalid_offsets_raise_without_text(bad):
    with pytest.raises(ValueError) as info:
        redact_text(TEXT, [bad])
    assert "John" not in str(info.value)


def test_tag_default_and_offsets():
    result = redact_text(TEXT, SPANS)
    assert result.redacted_text == ("Call [FIRST_NAME] [LAST_NAME] at [PHONE_NUMBER] or [EMAIL]. "
                                    "[FIRST_NAME] [LAST_NAME] again.")
    for record in result.redactions:
        assert result.redacted_text[record["redacted_start"]:record["redacted_end"]] == record["replacement"]
        assert set(record) == {"start", "end", "label", "replacement", "redacted_start", "redacted_end"}
    assert result.mapping is None


@pytest.mark.parametrize("tag_format,first", [("<{label}>", "<first_name>"), ("<{LABEL}>", "<FIRST_NAME>"),
                                              ("{LABEL}#{n}", "FIRST_NAME#1")])
def test_tag_formats(tag_format, first):
    assert redact_text(TEXT, SPANS, tag_format=tag_format).redactions[0]["replacement"] == first


def test_numbered_tags_same_value_same_number():
    text = "Ann met Bob; ANN called bob and Cy."
    spans = [("name", 0, 3), ("name", 8, 11), ("name", 13, 16), ("name", 24, 27), ("name", 32, 34)]
    result = redact_text(text, spans, tag_format="[{LABEL}_{n}]")
    assert [r["replacement"] for r in result.redactions] == \
        ["[NAME_1]", "[NAME_2]", "[NAME_1]", "[NAME_2]", "[NAME_3]"]


def test_mask_keeps_length_and_separators():
    assert mask_value("555-201-7731") == "***-***-****"
    assert mask_value("555-201-7731", keep_last=4) == "***-***-7731"
    assert mask_value("4111 1111 1111 1234", mask_char="#", keep_last=4) == "#### #### #### 1234"
    assert mask_value("John Smith") == "**********"
    assert mask_value("1234", keep_last=4) == "****"  # keeping all would reveal the value
    result = redact_text(TEXT, SPANS, style="mask")
    assert len(result.redacted_text) == len(TEXT)


def test_hash_is_keyed_hmac_stable_and_truncated():
    expected = hmac.new(b"k1", b"john smith", hashlib.sha256).hexdigest()[:16]
    assert hash_value("John  Smith", key=b"k1") == expected
    assert hash_value("john smith", key=b"k1", length=32) == hmac.new(b"k1", b"john smith",
                                                                         hashlib.sha256).hexdigest()[:32]
    assert hash_value("John Smith", key=b"k2") != expected


def test_hash_never_contains_the_value():
    key = b"k"
    # Find short hex-like values whose first digest contains them; the result must avoid them anyway.
    found = 0
    for n in range(16 ** 3):
        value = f"{n:03x}"
        first = hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:16]
        if value in first:
            found += 1
            out = hash_value(value, key=key)
            assert value not in out and len(out) == 16
            assert out == hash_value(value, key=key)
    assert found > 0


def test_hash_refuses_to_run_without_key(monkeypatch):
    monkeypatch.delenv("PRIVFILTER_HASH_KEY", raising=False)
    with pytest.raises(ConfigError, match="needs a key"):
        redact_text(TEXT, SPANS, style="hash")
    with pytest.raises(ConfigError, match="needs a key"):
        redact_text(TEXT, SPANS, label_styles={"email": "hash"})
    monkeypatch.setenv("PRIVFILTER_HASH_KEY", "from-env-0123456789")
    assert redact_text(TEXT, SPANS, style="hash").redactions[0]["replacement"] == \
        hash_value("John", key=b"from-env-0123456789")
    monkeypatch.setenv("OTHER_KEY", "other-key-0123456789")
    assert redact_text(TEXT, SPANS, style="hash", hash_key_env="OTHER_KEY").redactions[0]["replacement"] == \
        hash_value("John", key=b"other-key-0123456789")


def test_remove_and_label_styles():
    result = redact_text(TEXT, SPANS, style="remove", label_styles={"email": "mask"})
    assert result.redacted_text == "Call   at  or **********.   again."


@pytest.mark.parametrize("options,key", [({"style": "blank"}, "style"), ({"label_styles": {"email": "x"}}, "email"),
                                         ({"tag_format": "[{kind}]"}, "kind"), ({"tag_format": "[{"}, "tag_format"),
                                         ({"mask_char": "**"}, "mask_char"), ({"keep_last": -1}, "keep_last"),
                                         ({"hash_length": 4}, "hash_length"), ({"seed": 1.5}, "seed"),
                                         ({"keep_mapping": "yes"}, "keep_mapping")])
def test_config_errors_name_the_key(options, key):
    with pytest.raises(ConfigError, match=key):
        RedactionConfig(**options)


@pytest.mark.parametrize("style", ["tag", "mask", "hash", "surrogate", "remove"])
def test_restore_from_records_is_exact(style):
    result = redact_text(TEXT, SPANS, style=style, hash_key="k" * 16, keep_mapping=True)
    assert result.redacted_text != TEXT
    assert restore(result.redacted_text, result.redactions) == TEXT


def test_restore_from_dict_with_numbered_tags():
    result = redact_text(TEXT, SPANS, tag_format="[{LABEL}_{n}]", keep_mapping=True)
    assert result.mapping == {"[FIRST_NAME_1]": "John", "[LAST_NAME_1]": "Smith", "[PHONE_NUMBER_1]": "555-201-7731",
                              "[EMAIL_1]": "john@x.org"}
    assert restore(result.redacted_text, result.mapping) == TEXT


def test_restore_rejects_edited_text_and_missing_originals():
    result = redact_text(TEXT, SPANS, keep_mapping=True)
    with pytest.raises(ValueError, match="changed"):
        restore("X" + result.redacted_text, result.redactions)
    plain = redact_text(TEXT, SPANS)
    with pytest.raises(ValueError, match="keep_mapping"):
        restore(plain.redacted_text, plain.redactions)


def test_without_keep_mapping_no_original_in_output():
    for style in ("tag", "mask", "hash", "surrogate", "remove"):
        result = redact_text(TEXT, SPANS, style=style, hash_key="k" * 16, seed=3)
        dumped = repr(result.redactions) + repr(result.mapping)
        for _, start, end in SPANS:
            assert TEXT[start:end] not in dumped


def test_normalize_value():
    assert normalize_value("  JOHN \n Smith ") == "john smith"


def test_redactor_reuse_gives_same_result_with_seed():
    redactor = Redactor(RedactionConfig(style="surrogate", seed="s"))
    assert redactor.redact(TEXT, SPANS) == redactor.redact(TEXT, SPANS)


# --- property tests: random texts, random (overlapping) spans ------------------------------------------------
LABELS = ["first_name", "phone_number", "date", "email", "ssn", "custom_label", "NAME"]


@st.composite
def text_and_spans(draw):
    text = draw(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60))
    n = len(text)
    spans = []
    for _ in range(draw(st.integers(0, 6))):
        start = draw(st.integers(0, n))
        end = draw(st.integers(start, n))
        spans.append(CharSpan(draw(st.sampled_from(LABELS)), start, end, draw(st.floats(0, 1))))
    return text, spans


@pytest.mark.parametrize("style", ["tag", "mask", "hash", "surrogate", "remove"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=text_and_spans())
def test_random_spans_offsets_valid_and_every_span_covered(style, case):
    text, spans = case
    result = redact_text(text, spans, style=style, hash_key="k" * 16, tag_format="[{LABEL}_{n}]", keep_mapping=True)
    records = result.redactions
    redacted = result.redacted_text
    cursor = redacted_cursor = 0
    for record in records:
        assert 0 <= record["start"] < record["end"] <= len(text)
        assert record["start"] >= cursor  # ordered, disjoint
        gap = text[cursor:record["start"]]
        assert redacted[redacted_cursor:record["redacted_start"]] == gap  # untouched text kept exactly
        assert redacted[record["redacted_start"]:record["redacted_end"]] == record["replacement"]
        cursor, redacted_cursor = record["end"], record["redacted_end"]
    assert redacted[redacted_cursor:] == text[cursor:]
    covered = set()
    for record in records:
        covered.update(range(record["start"], record["end"]))
    for span in spans:
        assert set(range(span.start, span.end)) <= covered
    assert restore(redacted, records) == text


def test_pure_modules_import_neither_spacy_nor_faker():
    import subprocess
    import sys

    code = ("import sys, spacy_privfilter.redaction.redactor, spacy_privfilter.redaction.surrogates, spacy_privfilter.redaction.date_shift; "
            "print(sorted(m for m in ('spacy', 'faker', 'torch', 'mlx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
