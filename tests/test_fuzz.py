"""Property tests (hypothesis) over the parts that take untrusted input: tokenizer offsets, the Viterbi decoder, the
JSONL line parser, the safetensors header reader and redaction. A fixed, derandomized budget keeps them
deterministic and fast (a few seconds each) so they run in every CI run; a crash here is a failure."""
from __future__ import annotations

import json
import re
import struct

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from spacy_privfilter.cli.inputs import Source, parse_line_safely  # noqa: E402
from spacy_privfilter.checkpoint.safetensors_io import read_header  # noqa: E402
from spacy_privfilter.decode import tags_to_token_spans, transition_matrix, viterbi, viterbi_dense  # noqa: E402
from spacy_privfilter.errors import CheckpointError  # noqa: E402
from spacy_privfilter.labels import LabelScheme  # noqa: E402
from spacy_privfilter.redaction.redactor import RedactionConfig, Redactor, restore  # noqa: E402

BUDGET = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
# Any code point, lone surrogates included (they arrive through JSON "\ud800" escapes).
TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=60)


@pytest.fixture(scope="module")
def tokenizer():
    from spacy_privfilter.tokens import get_tokenizer

    try:
        return get_tokenizer()
    except Exception as exc:  # no cached o200k_base and no network
        pytest.skip(f"o200k_base tokenizer unavailable ({type(exc).__name__})")


@BUDGET
@given(text=TEXT)
def test_token_offsets_cover_the_text_in_order(tokenizer, text):
    tokens = tokenizer.encode(text)
    starts, ends = tokens.char_starts, tokens.char_ends
    assert len(starts) == len(ends) == len(tokens)
    assert np.all(starts >= 0) and np.all(ends <= len(text)) and np.all(starts < ends)
    assert np.all(np.diff(starts) >= 0) and np.all(np.diff(ends) >= 0)
    covered = np.zeros(len(text), dtype=bool)
    for start, end in zip(starts, ends):
        covered[start:end] = True
    assert covered.all()
    if text.encode("utf-8", "surrogatepass") == text.encode("utf-8", "replace"):  # no lone surrogates
        assert b"".join(tokenizer.token_bytes(tokens.input_ids)) == text.encode("utf-8")


SCHEME = LabelScheme.from_classes(("a", "b"))


@BUDGET
@given(values=st.lists(st.lists(st.floats(-30, 30, allow_nan=False), min_size=SCHEME.num_labels,
                                 max_size=SCHEME.num_labels), max_size=14))
def test_viterbi_gives_a_grammatical_path_as_good_as_the_textbook_one(values):
    log_probs = np.asarray(values, dtype=np.float32).reshape(-1, SCHEME.num_labels)
    path, dense = viterbi(log_probs, SCHEME), viterbi_dense(log_probs, SCHEME)
    assert path.shape == (len(values),)
    trans = transition_matrix(SCHEME)
    assert all(np.isfinite(trans[a, b]) for a, b in zip(path, path[1:]))

    def score(p):
        return float(sum(log_probs[t, k] for t, k in enumerate(p)) + sum(trans[a, b] for a, b in zip(p, p[1:])))

    if len(values):
        assert score(path) == pytest.approx(score(dense), abs=1e-3)
    for _, start, end in tags_to_token_spans(path, SCHEME):
        assert 0 <= start < end <= len(values)


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
                           max_leaves=12)
LINES = st.one_of(st.binary(max_size=80), JSON_VALUES.map(lambda v: json.dumps(v).encode()),
                  st.dictionaries(st.sampled_from(["text", "body", "id"]), JSON_VALUES, max_size=3)
                  .map(lambda v: json.dumps(v).encode()),
                  st.integers(1, 200).map(lambda n: b"[" * n * 50 + b"]" * n * 50),
                  st.integers(4300, 6000).map(lambda n: b'{"text": "x", "n": ' + b"9" * n + b"}"))


@BUDGET
@given(raw=LINES, kind=st.sampled_from(["jsonl", "lines"]), encoding=st.sampled_from(["utf-8", "latin-1"]))
def test_the_line_parser_never_crashes_and_errors_name_the_line(raw, kind, encoding):
    source = Source(None, kind, "-", "<stdin>")
    item = parse_line_safely(source, 7, raw + b"\n", "text", encoding)
    assert item.line == 7
    if item.error is not None:
        assert item.error.startswith("<stdin>:7: ") and item.text is None
    elif item.text is not None:
        assert isinstance(item.text, str)


HEADER_ENTRY = st.fixed_dictionaries({}, optional={
    "dtype": st.sampled_from(["F32", "BF16", "U8", "X9"]) | JSON_VALUES,
    "shape": st.lists(st.integers(-3, 2 ** 40), max_size=3) | JSON_VALUES,
    "data_offsets": st.lists(st.integers(-8, 64), min_size=2, max_size=2) | JSON_VALUES})
HEADERS = st.one_of(st.dictionaries(TEXT, HEADER_ENTRY | JSON_VALUES, max_size=4).map(lambda h: json.dumps(h).encode()),
                    st.binary(max_size=64))


@BUDGET
@given(header=HEADERS, data=st.binary(max_size=64), claimed=st.none() | st.integers(0, 2 ** 64 - 1))
def test_the_safetensors_header_reader_only_ever_raises_checkpoint_errors(tmp_path, header, data, claimed):
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(header) if claimed is None else claimed) + header + data)
    try:
        parsed = read_header(path)
    except CheckpointError as exc:
        assert "model.safetensors" in str(exc)
        return
    for entry in parsed.tensors.values():
        assert 0 <= entry.start <= entry.end and parsed.data_start + entry.end <= path.stat().st_size


@st.composite
def texts_and_spans(draw):
    text = draw(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=50))
    cuts = draw(st.lists(st.tuples(st.integers(0, len(text)), st.integers(0, len(text))), max_size=6))
    label = st.sampled_from(["first_name", "last_name", "email", "phone_number", "date", "password", "odd label"])
    return text, [(draw(label), min(a, b), max(a, b)) for a, b in cuts]


STYLES = {"tag": {}, "numbered": {"tag_format": "[{LABEL}_{n}]"}, "mask": {"style": "mask", "keep_last": 2},
          "hash": {"style": "hash"}, "surrogate": {"style": "surrogate", "seed": "fuzz"}, "remove": {"style": "remove"}}


@pytest.fixture(scope="module")
def redactors():
    pytest.importorskip("faker")
    return {name: Redactor(RedactionConfig(keep_mapping=True, **options), hash_key="fuzz-key-0123456789")
            for name, options in STYLES.items()}


@BUDGET
@given(case=texts_and_spans(), style=st.sampled_from(sorted(STYLES)))
def test_redaction_restores_exactly_and_hides_every_span(redactors, case, style):
    text, spans = case
    result = redactors[style].redact(text, spans)
    assert restore(result.redacted_text, result.redactions) == text
    for record in result.redactions:
        value = text[record["start"]:record["end"]]
        replacement = record["replacement"]
        assert result.redacted_text[record["redacted_start"]:record["redacted_end"]] == replacement
        if style == "mask":
            assert sum(ch.isalnum() for ch in replacement) <= 2  # keep_last=2: at most two stay visible
        if len(value.strip()) >= 3 and style in ("surrogate", "hash", "tag", "numbered"):
            assert not re.search(rf"(?<!\w){re.escape(value.casefold())}(?!\w)", replacement.casefold())
