"""Pick and start an engine by name; each engine module imports its framework only inside itself."""
from __future__ import annotations

import importlib
from typing import Any, Literal, Protocol, get_args

from ..errors import BackendUnavailableError
from .core import TableJob

EngineName = Literal["local", "spark", "ray", "dask"]
ENGINES: tuple[str, ...] = get_args(EngineName)
# The exact install that provides each engine (named in the error when it is missing).
INSTALL = {
    "spark": 'pip install pyspark pyarrow "pandas<3"  (or the scale extra from a clone: pip install ".[scale]"; '
             'Spark needs Java 17+)',
    "ray": 'pip install "ray[data]" pyarrow "pandas<3"  (or the scale extra from a clone: pip install ".[scale]")',
    "dask": 'pip install "dask[distributed]" pyarrow "pandas<3"  (or the scale extra from a clone: '
            'pip install ".[scale]")',
}


class Engine(Protocol):
    """Scrubs a whole table on its workers and returns the rows in the input's order."""

    name: str
    workers: int

    def scrub(self, table: Any, job: TableJob) -> Any: ...

    def close(self) -> None: ...


def start_engine(name: str, workers: int = 1) -> Engine:
    """A started engine: ``local`` in this process, or a local Spark / Ray / Dask with ``workers`` workers.

    Ray joins the cluster in ``RAY_ADDRESS`` and Dask the scheduler in ``DASK_SCHEDULER_ADDRESS`` when set.
    """
    if name not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {name!r}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1; got {workers}")
    module = importlib.import_module(f".{name}", __package__)
    return module.Engine(workers)


def missing_engine(name: str, exc: ImportError) -> BackendUnavailableError:
    """The error raised when an engine's framework is not installed: it names the install that fixes it."""
    return BackendUnavailableError(f"--engine {name} needs {name}'s Python package ({type(exc).__name__}: {exc.name}); "
                       f"{INSTALL[name]}")
