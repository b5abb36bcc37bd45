"""privacy_filter in nlp.pipe: batching, order, long docs, error handler, multiprocessing."""
from __future__ import annotations

import random

import numpy as np
import pytest

from component_fakes import FixedDetector, make_detector, make_nlp, span_at, spans_of


def mixed_texts(n: int = 300, seed: int = 3) -> list[str]:
    """Empty, whitespace, emoji, one token, ordinary sentences and one 50k-character document."""
    rng = random.Random(seed)
    sentence = ("Patient Jane Doe (DOB 1984-10-28) was seen by Dr Amir Patel; call 555 0100 or mail "
                "jane.doe@example.org. ")
    kinds = [
        lambda: "",
        lambda: " \n\t ",
        lambda: "🙂 call me 👩‍⚕️ at 555 0100 🙂",
        lambda: "Jane",
        lambda: sentence * rng.randint(1, 4),
        lambda: "東京都の山田太郎さん email taro@example.jp",
    ]
    texts = [kinds[rng.randrange(len(kinds))]() for _ in range(n)]
    long_text = (sentence * (50_000 // len(sentence) + 1))[:50_000]
    texts[n // 2] = long_text
    return texts


def test_pipe_of_300_mixed_docs_equals_one_by_one():
    texts = mixed_texts()
    nlp = make_nlp(make_detector(max_tokens=64, max_batch_tokens=512), set_ents=True)
    one_by_one = [nlp(text) for text in texts]
    for batch_size in (7, 64):
        docs = list(nlp.pipe(texts, batch_size=batch_size))
        assert len(docs) == len(texts)
        assert [doc.text for doc in docs] == texts
        for doc, ref in zip(docs, one_by_one):
            assert spans_of(doc) == spans_of(ref)
            np.testing.assert_array_equal(doc.spans["pii"].attrs["scores"], ref.spans["pii"].attrs["scores"])
            assert [(e.label_, e.start, e.end) for e in doc.ents] == \
                [(e.label_, e.start, e.end) for e in ref.ents]
    long_doc = one_by_one[len(texts) // 2]
    assert len(long_doc.text) == 50_000 and len(long_doc.spans["pii"]) > 100  # spans all along the long doc
    assert long_doc.spans["pii"][-1].end_char > 45_000
    assert all(len(one_by_one[i].spans["pii"]) == 0 for i, t in enumerate(texts) if not t.strip())


def test_long_doc_is_windowed_and_equals_one_window():
    text = mixed_texts()[150]
    windowed = make_detector(max_tokens=64, max_batch_tokens=256)
    whole = make_detector(max_tokens=20_000, max_batch_tokens=20_000)
    doc_windowed = make_nlp(windowed)(text)
    assert max(seq for _, seq in windowed.backend.calls) <= 64
    assert max(batch * seq for batch, seq in windowed.backend.calls) <= 256
    assert spans_of(doc_windowed) == spans_of(make_nlp(whole)(text))


def test_as_tuples_keeps_contexts_in_order():
    texts = mixed_texts(40)
    nlp = make_nlp(make_detector())
    out = list(nlp.pipe([(text, i) for i, text in enumerate(texts)], as_tuples=True, batch_size=6))
    assert [context for _, context in out] == list(range(40))
    assert [doc.text for doc, _ in out] == texts


def test_one_detector_call_per_chunk():
    texts = [f"Note {i}: Jane Doe" for i in range(20)] + ["", "   "]
    detector = FixedDetector()
    nlp = make_nlp(detector)
    list(nlp.pipe(texts, batch_size=8))
    assert detector.batches == [8, 8, 4]  # blank texts never reach the model


def test_error_handler_gets_only_the_bad_doc():
    texts = [f"Hello Jane number {i}" for i in range(10)]
    bad = texts[4]
    spans = {t: [span_at(t, "Jane", "first_name")] for t in texts}
    nlp = make_nlp(FixedDetector(spans, fail=[bad]))
    seen = []

    def handler(name, proc, docs, exc):
        seen.append((name, [doc.text for doc in docs], type(exc).__name__))

    nlp.set_error_handler(handler)
    docs = list(nlp.pipe(texts, batch_size=4))
    assert seen == [("privacy_filter", [bad], "RuntimeError")]
    assert [doc.text for doc in docs] == [t for t in texts if t != bad]
    assert all(spans_of(doc) == [("first_name", 6, 10)] for doc in docs)


def test_default_error_handler_raises():
    nlp = make_nlp(FixedDetector(fail=["boom text"]))
    with pytest.raises(RuntimeError, match="fake failure"):
        list(nlp.pipe(["fine", "boom text", "fine again"], batch_size=3))


def test_n_process_2_matches_single_process():
    texts = mixed_texts(24, seed=11)
    texts[12] = texts[12][:3000]  # keep the multiprocess test short
    nlp = make_nlp(make_detector(), set_ents=True)
    single = [spans_of(doc) for doc in nlp.pipe(texts, batch_size=5)]
    multi = list(nlp.pipe(texts, batch_size=5, n_process=2))
    assert [doc.text for doc in multi] == texts
    assert [spans_of(doc) for doc in multi] == single
    assert all(len(doc.spans["pii"].attrs["scores"]) == len(doc.spans["pii"]) for doc in multi)


class AllocatingDetector(FixedDetector):
    """Keeps 20,000 small tracked objects alive for the batch (as many detected spans would), counting the
    garbage collections that start while it runs."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.collections_inside: list[int] = []
        self.enabled_inside: list[bool] = []

    def detect_batch(self, texts):
        import gc

        started = []
        callback = lambda phase, info: phase == "start" and started.append(info["generation"])  # noqa: E731
        gc.callbacks.append(callback)
        try:
            self.enabled_inside.append(gc.isenabled())
            kept = [[i] for i in range(20_000)]  # > the young generation's threshold (700) many times over
            out = super().detect_batch(texts)
        finally:
            gc.callbacks.remove(callback)
        self.collections_inside.append(len(started))
        del kept
        return out


def test_no_garbage_collection_runs_inside_a_batch_and_the_collector_is_back_after():
    import gc

    detector = AllocatingDetector(fail=["boom"])
    nlp = make_nlp(detector)
    docs = list(nlp.pipe([f"Note {i}" for i in range(6)], batch_size=3))
    assert len(docs) == 6 and gc.isenabled()
    assert detector.enabled_inside == [False, False] and detector.collections_inside == [0, 0]
    nlp.set_error_handler(lambda *args: None)
    list(nlp.pipe(["fine", "boom"], batch_size=2))  # the batch fails, then its docs run one by one
    assert gc.isenabled()
    gc.disable()
    try:
        list(nlp.pipe(["a", "b"], batch_size=2))
        assert not gc.isenabled()  # the user's choice stands
    finally:
        gc.enable()
