"""Label schemes, transition biases and the constrained Viterbi decoder."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from spacy_privfilter import cbuild, decode
from spacy_privfilter.decode import log_softmax, tags_to_token_spans, viterbi, viterbi_dense, viterbi_numpy
from spacy_privfilter.errors import CheckpointError, ConfigError, LabelSchemeError
from spacy_privfilter.labels import (BIAS_KEYS, LabelScheme, TransitionBiases, normalize_id2label,
                                     read_checkpoint_biases, read_id2label)

RESEARCH = Path(__file__).resolve().parents[2] / "shared" / "research"
NEG = -1e9


def load_id2label(name: str) -> dict:
    path = RESEARCH / name
    if not path.is_file():
        pytest.skip(f"{name} not present")
    return json.loads(path.read_text())["id2label"]


@pytest.fixture(scope="module")
def nemotron() -> LabelScheme:
    return LabelScheme.from_id2label(load_id2label("id2label-nemotron.json"))


# ---------------------------------------------------------------------------------------------- schemes
def test_nemotron_and_base_schemes(nemotron):
    assert nemotron.num_labels == 221 and len(nemotron.classes) == 55
    assert nemotron.outside_id == 0 and nemotron.classes[0] == "account_number"
    k = nemotron.classes.index("first_name")
    for prefix, ids in zip("BIES", (nemotron.begin_ids, nemotron.inside_ids, nemotron.end_ids,
                                    nemotron.single_ids)):
        assert nemotron.id2label[ids[k]] == f"{prefix}-first_name"
    base = LabelScheme.from_id2label(load_id2label("id2label-openai-privacy-filter.json"))
    assert base.num_labels == 33 and base.classes[-1] == "secret"


def test_any_order_is_accepted():
    scheme = LabelScheme.from_id2label(["E-b", "B-a", "S-b", "O", "I-b", "E-a", "B-b", "I-a", "S-a"])
    assert scheme.classes == ("b", "a") and scheme.outside_id == 3
    assert scheme.class_of.tolist() == [0, 1, 0, -1, 0, 1, 0, 1, 1]


@pytest.mark.parametrize("labels, fragments", [
    (["O", "B-x", "I-x", "E-x"], ["S-x"]),
    (["B-x", "I-x", "E-x", "S-x"], ["exactly one 'O'", "found 0"]),
    (["O", "O", "B-x", "I-x", "E-x", "S-x"], ["found 2", "appears twice"]),
    (["O", "B-x", "I-x", "E-x", "S-x", "X-y", "bad"], ["'X-y'", "'bad'"]),
    (["O"], ["no span classes"]),
    (["O", "B-x", "I-x", "E-x", "S-x", "B-y"], ["I-y", "E-y", "S-y"]),
])
def test_malformed_schemes_list_problems(labels, fragments):
    with pytest.raises(LabelSchemeError) as err:
        LabelScheme.from_id2label(labels)
    for fragment in fragments:
        assert fragment in str(err.value)


def test_mapping_with_gap_is_rejected():
    with pytest.raises(LabelSchemeError, match="without gaps"):
        LabelScheme.from_id2label({0: "O", 2: "B-x"})


# ---------------------------------------------------------------------------------------------- biases
def test_biases_from_dict_none_and_errors():
    assert TransitionBiases.from_any(None).as_dict() == dict.fromkeys(BIAS_KEYS, 0.0)
    b = TransitionBiases.from_any({"transition_bias_inside_to_continue": 1.5})
    assert b.transition_bias_inside_to_continue == 1.5 and b.transition_bias_end_to_start == 0.0
    with pytest.raises(ConfigError) as err:
        TransitionBiases.from_any({"inside_to_continue": 1.0})
    assert "inside_to_continue" in str(err.value) and all(k in str(err.value) for k in BIAS_KEYS)
    with pytest.raises(ConfigError, match="transition_bias_background_stay"):
        TransitionBiases.from_any({"transition_bias_background_stay": float("nan")})
    with pytest.raises(ConfigError):
        TransitionBiases.from_any(3)


def test_biases_from_calibration_file(tmp_path):
    values = {key: i / 10 for i, key in enumerate(BIAS_KEYS)}
    path = tmp_path / "viterbi_calibration.json"
    path.write_text(json.dumps({"operating_points": {"default": {"biases": values}}}))
    assert TransitionBiases.from_any(path).as_dict() == values
    assert TransitionBiases.from_any(str(tmp_path)).as_dict() == values  # a checkpoint folder
    path.write_text(json.dumps({"operating_points": {"default": {"biases": {BIAS_KEYS[0]: 1.0}}}}))
    with pytest.raises(CheckpointError, match=BIAS_KEYS[1]):
        TransitionBiases.from_any(path)
    path.write_text(json.dumps({"default": values}))
    with pytest.raises(CheckpointError, match="operating_points"):
        TransitionBiases.from_any(path)
    with pytest.raises(CheckpointError, match="not found"):
        TransitionBiases.from_any(tmp_path / "missing.json")


def test_read_id2label_sources_in_order(tmp_path):
    labels = ["O", "S-x", "B-x", "I-x", "E-x"]
    assert read_id2label(tmp_path, {}) == ()
    assert read_id2label(tmp_path, {"ner_class_names": labels}) == tuple(labels)
    (tmp_path / "id2label.json").write_text(json.dumps({str(i): name for i, name in enumerate(labels)}))
    assert read_id2label(tmp_path, {"ner_class_names": ["O"]}) == tuple(labels)  # the file wins
    assert read_id2label(tmp_path, {"id2label": {"1": "S-y", "0": "O"}}) == ("O", "S-y")  # config.json wins
    assert normalize_id2label({1: "S-y", 0: "O"}) == normalize_id2label(["O", "S-y"])
    (tmp_path / "id2label.json").write_text(json.dumps({"0": "O", "2": "S-x"}))
    with pytest.raises(CheckpointError, match="id2label.json.*without gaps"):
        read_id2label(tmp_path, {})


def test_checkpoint_biases_use_the_one_calibration_parser(tmp_path, tiny_checkpoint):
    import shutil

    from spacy_privfilter.checkpoint.discover import inspect_checkpoint

    assert read_checkpoint_biases(tmp_path, {}) is None
    assert read_checkpoint_biases(tmp_path, {"_mlx_viterbi_biases": {BIAS_KEYS[2]: 1}}) == {BIAS_KEYS[2]: 1.0}
    with pytest.raises(CheckpointError, match="_mlx_viterbi_biases.*unknown transition bias keys: nope"):
        read_checkpoint_biases(tmp_path, {"_mlx_viterbi_biases": {"nope": 1.0}})
    folder = shutil.copytree(tiny_checkpoint(), tmp_path / "hf")
    # A partial calibration file is the same error whether a Detector or the checkpoint reader meets it.
    (folder / "viterbi_calibration.json").write_text(
        json.dumps({"operating_points": {"default": {"biases": {BIAS_KEYS[0]: 1.0}}}}))
    with pytest.raises(CheckpointError, match=BIAS_KEYS[1]):
        inspect_checkpoint(folder)
    with pytest.raises(CheckpointError, match=BIAS_KEYS[1]):
        TransitionBiases.from_any(folder)


# ---------------------------------------------------------------------------------------------- reference
def reference_tables(id2label, biases):
    """Start, end and transition scores written straight from the spec's rules, by label name."""
    bias = biases.as_dict()
    parsed = [(None, None) if lab == "O" else tuple(lab.split("-", 1)) for lab in id2label]
    start = np.array([0.0 if p in (None, "B", "S") else NEG for p, _ in parsed])
    end = np.array([0.0 if p in (None, "E", "S") else NEG for p, _ in parsed])
    trans = np.full((len(parsed), len(parsed)), NEG)
    for (i, (pi, ci)), (j, (pj, cj)) in itertools.product(enumerate(parsed), repeat=2):
        if pi is None and pj is None:
            trans[i, j] = bias["transition_bias_background_stay"]
        elif pi is None and pj in ("B", "S"):
            trans[i, j] = bias["transition_bias_background_to_start"]
        elif pi in ("E", "S") and pj is None:
            trans[i, j] = bias["transition_bias_end_to_background"]
        elif pi in ("E", "S") and pj in ("B", "S"):
            trans[i, j] = bias["transition_bias_end_to_start"]
        elif pi in ("B", "I") and pj == "I" and ci == cj:
            trans[i, j] = bias["transition_bias_inside_to_continue"]
        elif pi in ("B", "I") and pj == "E" and ci == cj:
            trans[i, j] = bias["transition_bias_inside_to_end"]
    return start, end, trans


def brute_force_viterbi(log_probs, tables):
    """O(T * C^2) textbook Viterbi with explicit loops over predecessors; ties to the lowest index."""
    start, end, trans = tables
    steps, labels = log_probs.shape
    delta = log_probs[0] + start
    back = np.zeros((steps, labels), dtype=np.int64)
    for t in range(1, steps):
        new = np.empty(labels)
        for j in range(labels):
            scores = delta + trans[:, j]
            back[t, j] = int(np.argmax(scores))
            new[j] = scores[back[t, j]] + log_probs[t, j]
        delta = new
    path = [int(np.argmax(delta + end))]
    for t in range(steps - 1, 0, -1):
        path.append(int(back[t, path[-1]]))
    return np.array(path[::-1])


def path_score(log_probs, tables, path):
    start, end, trans = tables
    return (start[path[0]] + end[path[-1]] + log_probs[np.arange(len(path)), path].sum()
            + sum(trans[a, b] for a, b in zip(path[:-1], path[1:])))


def random_scheme(rng):
    classes = [f"c{i}" for i in range(rng.integers(1, 4))]
    labels = ["O"] + [f"{p}-{c}" for c in classes for p in "BIES"]
    return [labels[i] for i in rng.permutation(len(labels))]


def random_biases(rng, ties: bool):
    values = rng.integers(-2, 3, size=6) if ties else rng.normal(0, 1.5, size=6)
    return TransitionBiases(**dict(zip(BIAS_KEYS, values.tolist())))


def random_log_probs(rng, steps, labels, ties: bool):
    if ties:  # a few distinct values, so equal scores (ties) happen often
        return -rng.integers(0, 3, size=(steps, labels)).astype(np.float64)
    return log_softmax(rng.normal(0, 3, size=(steps, labels)).astype(np.float32))


def test_brute_force_reference_is_optimal():
    """The reference itself: its path scores best among all label sequences (exhaustive, tiny cases)."""
    rng = np.random.default_rng(7)
    for _ in range(40):
        id2label = ["O", "B-a", "I-a", "E-a", "S-a"]
        biases = random_biases(rng, ties=False)
        tables = reference_tables(id2label, biases)
        lp = random_log_probs(rng, int(rng.integers(1, 5)), 5, ties=False)
        best = max(path_score(lp, tables, np.array(p)) for p in itertools.product(range(5), repeat=len(lp)))
        assert path_score(lp, tables, brute_force_viterbi(lp, tables)) == pytest.approx(best)


def is_valid_path(path, tables):
    start, end, trans = tables
    return start[path[0]] == 0 and end[path[-1]] == 0 and all(trans[a, b] > NEG / 2
                                                               for a, b in zip(path[:-1], path[1:]))


def test_viterbi_equals_brute_force_small_schemes():
    rng = np.random.default_rng(2026)
    compared = 0
    for case in range(3000):
        ties = case % 2 == 1
        id2label = random_scheme(rng)
        scheme = LabelScheme.from_id2label(id2label)
        biases = random_biases(rng, ties) if case % 3 else TransitionBiases()
        tables = reference_tables(id2label, biases)
        lp = random_log_probs(rng, int(rng.integers(1, 16)), len(id2label), ties)
        expected = brute_force_viterbi(lp, tables)
        got = viterbi(lp, scheme, biases)  # compiled where it builds (see test_the_compiled_decoder_is_used...)
        assert got.dtype == np.int64
        assert got.tolist() == expected.tolist(), f"case {case}"
        assert viterbi_numpy(lp, scheme, biases).tolist() == expected.tolist(), f"case {case} (numpy)"
        assert viterbi_dense(lp, scheme, biases).tolist() == expected.tolist(), f"case {case} (dense)"
        assert is_valid_path(got, tables)
        compared += 1
    print(f"\nviterbi vs brute force, small random schemes: {compared} emission matrices, 0 differences")


def test_viterbi_equals_brute_force_nemotron(nemotron):
    rng = np.random.default_rng(221)
    tables_zero = reference_tables(nemotron.id2label, TransitionBiases())
    compared = 0
    for case in range(500):
        ties = case % 2 == 1
        biases = random_biases(rng, ties) if case % 3 else TransitionBiases()
        tables = reference_tables(nemotron.id2label, biases) if case % 3 else tables_zero
        lp = random_log_probs(rng, int(rng.integers(1, 12)), 221, ties)
        expected = _dense_vectorised(lp, tables)
        assert viterbi(lp, nemotron, biases).tolist() == expected.tolist(), f"case {case}"
        assert viterbi_numpy(lp, nemotron, biases).tolist() == expected.tolist(), f"case {case} (numpy)"
        compared += 1
    print(f"\nviterbi vs brute force, 221 Nemotron labels: {compared} emission matrices, 0 differences")


def _dense_vectorised(lp, tables):
    """The brute-force recurrence with the inner predecessor loop in numpy (221 labels make loops slow)."""
    start, end, trans = tables
    delta = lp[0] + start
    back = np.zeros(lp.shape, dtype=np.int64)
    for t in range(1, len(lp)):
        scores = delta[:, None] + trans
        back[t] = np.argmax(scores, axis=0)
        delta = scores[back[t], np.arange(lp.shape[1])] + lp[t]
    path = [int(np.argmax(delta + end))]
    for t in range(len(lp) - 1, 0, -1):
        path.append(int(back[t, path[-1]]))
    return np.array(path[::-1])


@pytest.fixture()
def fresh_decoder(monkeypatch, tmp_path):
    """The compiled decoder loaded anew, from an empty cache folder; restored afterwards."""
    monkeypatch.setenv("SPACY_PRIVFILTER_KERNEL_CACHE", str(tmp_path / "kernels"))
    decode._compiled_viterbi.cache_clear()
    yield decode._compiled_viterbi
    decode._compiled_viterbi.cache_clear()
    decode._reason = None


def test_the_compiled_decoder_is_used_where_a_compiler_exists(fresh_decoder, tmp_path, nemotron):
    if cbuild.find_compiler() is None:
        pytest.skip("no C++ compiler here: viterbi runs viterbi_numpy")
    assert fresh_decoder() is not None, decode.compiled_viterbi_reason()
    assert len(list((tmp_path / "kernels").glob("viterbi-*.so"))) == 1
    lp = log_softmax(np.random.default_rng(5).normal(0, 3, (300, 221)).astype(np.float32))
    assert viterbi(lp, nemotron).tolist() == viterbi_numpy(lp, nemotron).tolist()


def test_without_the_compiled_decoder_viterbi_runs_in_numpy_and_says_why(fresh_decoder, monkeypatch, nemotron):
    lp = log_softmax(np.random.default_rng(6).normal(0, 3, (50, 221)).astype(np.float32))
    monkeypatch.setenv("SPACY_PRIVFILTER_NATIVE", "0")
    assert fresh_decoder() is None and "SPACY_PRIVFILTER_NATIVE=0" in decode.compiled_viterbi_reason()
    assert viterbi(lp, nemotron).tolist() == viterbi_numpy(lp, nemotron).tolist()
    fresh_decoder.cache_clear()
    monkeypatch.setenv("SPACY_PRIVFILTER_NATIVE", "1")
    monkeypatch.setenv("CXX", "false")  # a compiler that fails
    assert fresh_decoder() is None and "false failed to build the Viterbi decoder" in decode.compiled_viterbi_reason()
    assert viterbi(lp, nemotron).tolist() == viterbi_numpy(lp, nemotron).tolist()


def test_a_compiled_decoder_that_disagrees_with_numpy_is_refused(fresh_decoder, monkeypatch):
    if cbuild.find_compiler() is None:
        pytest.skip("no C++ compiler here")
    real = decode._run_compiled

    def off_by_one(entry, lp, scheme, biases):
        path = real(entry, lp, scheme, biases)
        path[-1] = (path[-1] + 1) % scheme.num_labels
        return path

    monkeypatch.setattr(decode, "_run_compiled", off_by_one)
    assert fresh_decoder() is None and "self-test" in decode.compiled_viterbi_reason()


def test_viterbi_edge_cases(nemotron):
    assert viterbi(np.zeros((0, 221)), nemotron).shape == (0,)
    with pytest.raises(ValueError, match="shape"):
        viterbi(np.zeros((3, 5)), nemotron)
    with pytest.raises(ValueError, match="NaN"):
        viterbi(np.full((2, 221), np.nan), nemotron)
    # Argmax path I-x I-x E-x is not grammatical; the decoder repairs it into a span starting with B-x.
    k = nemotron.classes.index("email")
    lp = np.full((3, 221), -5.0)
    lp[[0, 1], nemotron.inside_ids[k]] = -0.1
    lp[2, nemotron.end_ids[k]] = -0.1
    lp[0, nemotron.begin_ids[k]] = -1.0
    tags = viterbi(lp, nemotron)
    assert tags.tolist() == [nemotron.begin_ids[k], nemotron.inside_ids[k], nemotron.end_ids[k]]


def test_log_softmax_rows():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 50, size=(7, 9)).astype(np.float32)
    out = log_softmax(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(np.exp(out).sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(out - out[:, :1], x - x[:, :1], rtol=1e-5, atol=1e-3)


# ---------------------------------------------------------------------------------------------- token spans
def test_tags_to_token_spans_rules():
    scheme = LabelScheme.from_classes(["a", "b"])
    ids = scheme.label2id
    tags = [ids[t] for t in ["O", "B-a", "I-a", "E-a", "S-b", "B-b", "E-b", "O", "S-a"]]
    assert tags_to_token_spans(tags, scheme) == [("a", 1, 4), ("b", 4, 5), ("b", 5, 7), ("a", 8, 9)]
    # Ungrammatical paths follow opf's rules: I of another class reopens, a stray E is one token,
    # an open span closes at the end.
    tags = [ids[t] for t in ["I-a", "I-b", "E-a", "B-a", "I-a"]]
    assert tags_to_token_spans(tags, scheme) == [("a", 0, 1), ("b", 1, 2), ("a", 2, 3), ("a", 3, 5)]
    assert tags_to_token_spans([], scheme) == []
