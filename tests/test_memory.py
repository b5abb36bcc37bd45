"""Heap trimming between batches: harmless where it runs, a no-op where it cannot, called by the component."""
from __future__ import annotations

import sys

import pytest

from spacy_privfilter import memory
from spacy_privfilter.memory import HeapTrimmer, resident_bytes, trim_heap


def test_real_trim_is_harmless_and_rss_is_read_on_linux() -> None:
    assert isinstance(trim_heap(), bool)
    if sys.platform.startswith("linux"):
        assert resident_bytes() > 10 * 2**20
        assert HeapTrimmer().available


def test_trims_only_after_growth_past_the_threshold(monkeypatch) -> None:
    rss = iter([100, 150, 300, 120, 130, 400]).__next__
    calls = []
    monkeypatch.setattr(memory, "resident_bytes", rss)
    monkeypatch.setattr(memory, "_malloc_trim", lambda: lambda pad: calls.append(pad) or 1)
    trimmer = HeapTrimmer(threshold_bytes=100)
    assert [trimmer.after_batch() for _ in range(4)] == [False, False, True, False]  # 100, 150, 300 (+trim: 120), 130
    assert calls == [0] and trimmer.baseline == 120 and trimmer.trims == 1


def test_no_c_library_trim_means_no_op(monkeypatch) -> None:
    monkeypatch.setattr(memory, "_malloc_trim", lambda: None)
    trimmer = HeapTrimmer(threshold_bytes=0)
    assert not trimmer.available
    assert not trimmer.after_batch() and not trim_heap() and trimmer.trims == 0


def test_component_checks_after_every_model_batch(monkeypatch) -> None:
    pytest.importorskip("spacy")
    from component_fakes import make_nlp

    nlp = make_nlp()
    calls = []
    monkeypatch.setattr(HeapTrimmer, "after_batch", lambda self: calls.append(1) or False)
    docs = list(nlp.pipe(["Jane Doe wrote.", " ", "Call Ana.", "Bye."], batch_size=2))
    assert len(docs) == 4 and len(calls) == 2
    nlp("one more")
    assert len(calls) == 3


def test_allocator_tuning_respects_the_user_and_the_switch(monkeypatch) -> None:
    memory.tune_allocator.cache_clear()
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1000000")
    assert memory.tune_allocator() is False  # the user's own malloc settings win
    memory.tune_allocator.cache_clear()
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    monkeypatch.setenv("SPACY_PRIVFILTER_TUNE_MALLOC", "0")
    assert memory.tune_allocator() is False
    memory.tune_allocator.cache_clear()
    monkeypatch.delenv("SPACY_PRIVFILTER_TUNE_MALLOC")
    applied = memory.tune_allocator()
    assert applied is (sys.platform.startswith("linux") and memory._malloc_trim() is not None)
    memory.tune_allocator.cache_clear()


def test_kernel_caches_are_limited_unless_the_user_set_them(monkeypatch) -> None:
    import os

    monkeypatch.setattr(os, "environ", {})
    assert memory.limit_kernel_caches(5) is True
    assert os.environ == {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "5", "LRU_CACHE_CAPACITY": "5"}
    monkeypatch.setattr(os, "environ", {"LRU_CACHE_CAPACITY": "64"})
    assert memory.limit_kernel_caches() is False and os.environ == {"LRU_CACHE_CAPACITY": "64"}


def test_collector_paused_restores_the_collector_and_respects_the_callers_choice() -> None:
    import gc

    assert gc.isenabled()
    with memory.collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(KeyError):
        with memory.collector_paused():
            raise KeyError("boom")
    assert gc.isenabled()  # back on after an error too
    gc.disable()
    try:
        with memory.collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the caller turned it off: it stays off
    finally:
        gc.enable()
