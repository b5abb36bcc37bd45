"""Spark: ``DataFrame.mapInArrow``, so rows reach the Python workers as Arrow batches; each executor's Python
worker process builds the pipeline once (cached per process; Spark reuses its Python workers by default).

A failed task is retried by Spark (``spark.task.maxFailures``), so a worker that dies costs time, not rows.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Iterator

from .core import TableJob, in_row_order, partitions, require_pyarrow, scrub_table
from .engines import missing_engine


def _spark() -> Any:
    try:
        import pyspark
        from pyspark.sql import SparkSession  # noqa: F401
    except ImportError as exc:
        raise missing_engine("spark", exc) from exc
    return pyspark


def _scrub_batches(job: TableJob) -> Any:
    def scrub(batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            yield scrub_table(batch, job)
    return scrub


def output_schema(schema: Any, job: TableJob) -> Any:
    """The Spark schema of the result: the input's, plus the spans/redactions/error string columns."""
    from pyspark.sql.types import StringType, StructField, StructType

    extra = [job.spans_column, job.redactions_column] + ([job.error_column] if job.on_error == "row" else [])
    return StructType(list(schema.fields) + [StructField(name, StringType(), True) for name in extra if name])


def scrub_spark(frame: Any, job: TableJob) -> Any:
    """``frame`` (a Spark DataFrame) with its text fields scrubbed on the executors (lazy, like any DataFrame)."""
    _spark()
    return frame.mapInArrow(_scrub_batches(job), output_schema(frame.schema, job))


class Engine:
    """A local Spark session (``local[workers, 2]``: a failed task gets one retry) for the command line; an
    existing active session is used as it is."""

    name = "spark"

    def __init__(self, workers: int = 1) -> None:
        _spark()
        from pyspark.sql import SparkSession

        self.workers = workers
        self.session = SparkSession.getActiveSession()
        self._started = self.session is None
        if self.session is None:
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            self.session = (SparkSession.builder.master(f"local[{workers},2]").appName("spacy-privfilter")
                            .config("spark.ui.enabled", "false")
                            .config("spark.ui.showConsoleProgress", "false")
                            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
                            .config("spark.sql.execution.arrow.maxRecordsPerBatch", "256")
                            .getOrCreate())
            self.session.sparkContext.setLogLevel("ERROR")

    def scrub(self, table: Any, job: TableJob) -> Any:
        pa = require_pyarrow()
        parts = partitions(table.num_rows, self.workers)
        frame = self.session.createDataFrame(table).repartition(len(parts))
        out = scrub_spark(frame, job).toArrow()
        out = in_row_order(out, job)
        # Spark may widen or rename nested types on the way; the columns go back to the input's types.
        schema = pa.schema(list(table.schema) + [out.schema.field(n) for n in out.column_names
                                                 if n not in table.column_names])
        return out.select(schema.names).cast(schema)

    def close(self) -> None:
        if self._started:
            self.session.stop()
