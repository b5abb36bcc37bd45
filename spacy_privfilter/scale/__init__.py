"""Scrub datasets: records and tables in, the same records and tables out, here or on Spark, Ray Data or Dask.

    >>> from spacy_privfilter.scale import PipelineSpec, TableJob, scrub_table
    >>> job = TableJob(PipelineSpec({"model": "./pf-model"}), text_keys=("subject", "note.body"))
    >>> scrub_table(arrow_table, job)                      # one batch, in this process
    >>> from spacy_privfilter.scale.spark import scrub_spark  # or .ray.scrub_ray, .dask.scrub_dask
    >>> scrub_spark(spark_df, job)

Nothing here imports pyarrow, pandas, Spark, Ray or Dask until it is used; each adapter imports its own engine.
"""
from __future__ import annotations

from .core import TableJob, doc_spans, scrub_records, scrub_table
from .engines import ENGINES, EngineName, start_engine
from .fields import FieldError, OnError, OnMissing
from .spec import PipelineSpec, share_of_cores

__all__ = ["ENGINES", "EngineName", "FieldError", "OnError", "OnMissing", "PipelineSpec", "TableJob", "doc_spans",
           "scrub_records", "scrub_table", "share_of_cores", "start_engine"]
