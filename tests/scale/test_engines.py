"""Spark, Ray Data and Dask, each a real local session of 2 workers started here (one per engine, shared by its
tests): equal to local nlp.pipe, byte-identical CLI outputs, and a worker killed mid-job that costs no row."""
from __future__ import annotations

import os
import shutil

import pytest

import engine_checks as checks

pytest.importorskip("torch")
FRAMEWORK = {"spark": "pyspark", "ray": "ray.data", "dask": "distributed"}


@pytest.fixture(scope="module", params=sorted(FRAMEWORK))
def engine(request, fault_dir):
    pytest.importorskip(FRAMEWORK[request.param])
    if request.param == "spark" and not (shutil.which("java") or os.environ.get("JAVA_HOME")):
        pytest.skip("Spark needs Java 17+")
    yield from checks.session(request.param, fault_dir / request.param)


def test_equals_local_pipe(engine, checkpoint, nlp):
    checks.check_equals_local_pipe(engine, checkpoint, nlp)


def test_cli_outputs_are_byte_identical(engine, tmp_path, checkpoint, local_outputs, monkeypatch):
    if engine.name == "dask":  # the command line joins this session's cluster instead of starting one
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", engine.client.scheduler.address)
    checks.check_cli_byte_identical(engine.name, tmp_path, checkpoint, local_outputs)


def test_killed_worker_loses_no_row(engine, checkpoint, nlp, fault_dir):
    checks.check_killed_worker(engine, checkpoint, nlp, fault_dir / engine.name)
