"""Windows, batch packing, padding and document groups (the batching that the Detector runs on)."""
from __future__ import annotations

import numpy as np

from spacy_privfilter.batching import Window, group_documents, pack_batches, pad_batch, plan_windows


def test_plan_windows_cover_document():
    for n in (1, 9, 10, 11, 50, 123):
        windows = plan_windows(n, 10, 3)
        assert windows[0].core_start == 0 and windows[-1].core_stop == n
        for a, b in zip(windows, windows[1:]):
            assert a.core_stop == b.core_start
        for w in windows:
            assert w.stop - w.start <= 10 and w.core_start < w.core_stop
            assert w.core_start - w.start >= min(3, w.core_start)
            assert w.stop - w.core_stop >= min(3, n - w.core_stop)
    assert plan_windows(0, 10, 3) == []


def test_pack_batches_sorted_and_within_budget():
    windows = [Window(i, 0, n, 0, n) for i, n in enumerate([3, 10, 7, 10, 1, 5, 9])]
    batches = pack_batches(windows, 20)
    assert sorted(w.doc for b in batches for w in b) == list(range(7))
    for batch in batches:
        assert len(batch) * max(w.stop - w.start for w in batch) <= 20
    lengths = [w.stop - w.start for b in batches for w in b]
    assert lengths == sorted(lengths, reverse=True)


def test_group_documents_bounds_tokens_per_group():
    assert group_documents([3, 4, 2, 9, 1, 0, 5], 8) == [[0, 1], [2], [3], [4, 5, 6]]
    assert group_documents([], 8) == []


def test_pad_batch_right_pads_each_window():
    docs = [np.arange(10, 20), None, np.arange(30, 33)]
    input_ids, attention_mask = pad_batch([Window(0, 2, 7, 3, 6), Window(2, 0, 3, 0, 3)], docs, pad_token_id=-1)
    assert input_ids.dtype == np.int64 and attention_mask.dtype == bool
    np.testing.assert_array_equal(input_ids, [[12, 13, 14, 15, 16], [30, 31, 32, -1, -1]])
    np.testing.assert_array_equal(attention_mask, [[True] * 5, [True] * 3 + [False] * 2])
