"""dask: a real local session (2 workers) started by the test; equal to local nlp.pipe, byte-identical CLI
outputs, and a worker killed mid-job that costs no row."""
from __future__ import annotations

import pytest

import engine_checks as checks

pytest.importorskip("distributed")
pytest.importorskip("torch")


@pytest.fixture(scope="module")
def engine(fault_dir):
    yield from checks.session("dask", fault_dir)


def test_equals_local_pipe(engine, checkpoint, nlp):
    checks.check_equals_local_pipe(engine, checkpoint, nlp)


def test_cli_outputs_are_byte_identical(engine, tmp_path, checkpoint, local_outputs, monkeypatch):
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", engine.client.scheduler.address)  # reuse this module's cluster
    checks.check_cli_byte_identical("dask", tmp_path, checkpoint, local_outputs)


def test_killed_worker_loses_no_row(engine, checkpoint, nlp, fault_dir):
    checks.check_killed_worker(engine, checkpoint, nlp, fault_dir)
