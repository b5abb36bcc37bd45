"""The local engine: ``scrub_table`` in this process, batch after batch (the reference the others must equal)."""
from __future__ import annotations

from typing import Any

from .core import TableJob, scrub_table


class Engine:
    """Scrubs tables in this process with one cached pipeline."""

    name = "local"

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers

    def scrub(self, table: Any, job: TableJob) -> Any:
        return scrub_table(table, job)

    def close(self) -> None:
        pass
