"""Ray Data: ``Dataset.map_batches`` with a callable class, so each actor of the pool loads the model once.

Ray Data restarts an actor that dies and retries its batch on the pool (``max_restarts`` / ``max_task_retries``
default to -1 for actor pools), so a killed actor costs time, not rows.
"""
from __future__ import annotations

import logging
import os
from typing import Any

from .core import TableJob, in_row_order, partitions, scrub_table
from .engines import missing_engine
from .spec import worker_nlp


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise missing_engine("ray", exc) from exc
    return ray


class RayScrubber:
    """The callable class of ``map_batches``: builds the pipeline in its actor, then scrubs each batch."""

    def __init__(self, job: TableJob) -> None:
        self.job = job
        self.nlp = worker_nlp(job.pipeline)

    def __call__(self, batch: Any) -> Any:
        return scrub_table(batch, self.job, nlp=self.nlp)


def scrub_ray(dataset: Any, job: TableJob, *, concurrency: int = 1, num_cpus: float = 1, num_gpus: float = 0,
              batch_size: int = 256, **ray_remote_args: Any) -> Any:
    """``dataset`` with its text fields scrubbed by a pool of ``concurrency`` actors (lazy, like any Dataset).

    Each actor reserves ``num_cpus`` / ``num_gpus``; give ``job.pipeline.threads`` the same number of threads.
    """
    ray = _ray()
    options = dict(ray_remote_args)
    if num_gpus:
        options["num_gpus"] = num_gpus
    return dataset.map_batches(RayScrubber, fn_constructor_args=(job,), batch_format="pyarrow",
                               batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=concurrency),
                               num_cpus=num_cpus, **options)


class Engine:
    """A Ray session (``RAY_ADDRESS`` when set, else a local one with ``workers`` CPUs) for the command line."""

    name = "ray"

    def __init__(self, workers: int = 1) -> None:
        ray = _ray()
        self.workers = workers
        self._started = not ray.is_initialized()
        if self._started:
            address = os.environ.get("RAY_ADDRESS")
            ray.init(address=address, **({} if address else {"num_cpus": workers}), include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # its per-dataset INFO lines would flood stderr

    def scrub(self, table: Any, job: TableJob) -> Any:
        import pyarrow as pa

        ray = _ray()
        # One block per batch: Ray hands out blocks, so a single block would keep all but one actor idle.
        blocks = [table.slice(start, size) for start, size in partitions(table.num_rows, self.workers)]
        result = scrub_ray(ray.data.from_arrow(blocks), job, concurrency=self.workers,
                           batch_size=max(block.num_rows for block in blocks))
        out = pa.concat_tables(ray.get(result.to_arrow_refs()))
        return in_row_order(out, job)

    def close(self) -> None:
        if self._started:
            _ray().shutdown()

