"""Dask: ``map_partitions`` over a dask DataFrame, one pipeline per worker process (cached per process).

A worker that dies is restarted by its nanny and its partitions are recomputed elsewhere (``allowed-failures``),
so a lost worker costs time, not rows.
"""
from __future__ import annotations

import os
from typing import Any

from .core import TableJob, in_row_order, partitions, require_pyarrow, scrub_table
from .engines import missing_engine


def _dask() -> Any:
    try:
        import dask.dataframe as dd
        import distributed
    except ImportError as exc:
        raise missing_engine("dask", exc) from exc
    return dd, distributed


def output_meta(frame: Any, job: TableJob) -> Any:
    """The empty pandas frame ``map_partitions`` needs to know the result's columns and dtypes."""
    import pandas as pd

    meta = frame._meta.copy() if hasattr(frame, "_meta") else frame.iloc[:0].copy()
    extra = [job.spans_column, job.redactions_column] + ([job.error_column] if job.on_error == "row" else [])
    for name in filter(None, extra):
        meta[name] = pd.Series([], dtype=pd.ArrowDtype(require_pyarrow().string()))
    return meta


def scrub_dask(frame: Any, job: TableJob) -> Any:
    """``frame`` (a dask DataFrame) with its text fields scrubbed, partition by partition (lazy)."""
    _dask()
    return frame.map_partitions(scrub_table, job, meta=output_meta(frame, job))


class Engine:
    """A Dask client (``DASK_SCHEDULER_ADDRESS`` when set, else a LocalCluster of ``workers`` single-thread
    worker processes) for the command line."""

    name = "dask"

    def __init__(self, workers: int = 1) -> None:
        _, distributed = _dask()
        self.workers = workers
        address = os.environ.get("DASK_SCHEDULER_ADDRESS")
        self.cluster = None if address else distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        self.client = distributed.Client(address or self.cluster)

    def scrub(self, table: Any, job: TableJob) -> Any:
        import pandas as pd

        dd, _ = _dask()
        pa = require_pyarrow()
        frames = [table.slice(start, size).to_pandas(types_mapper=pd.ArrowDtype)
                  for start, size in partitions(table.num_rows, self.workers)]
        frame = dd.from_map(lambda part: part, frames)
        out = scrub_dask(frame, job).compute()
        return in_row_order(pa.Table.from_pandas(out, preserve_index=False), job)

    def close(self) -> None:
        import logging

        self.client.close()
        if self.cluster is not None:
            # A worker still inside torch's thread pool may take a moment to exit; the nanny then kills it, which is
            # fine at shutdown, so its warning is not shown.
            logging.getLogger("distributed.nanny").setLevel(logging.ERROR)
            self.cluster.close()
