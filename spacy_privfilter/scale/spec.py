"""A picklable description of a scrubbing pipeline, built into a spaCy ``nlp`` once per worker process.

Engines ship this small object to their workers (Spark executors, Ray actors, Dask workers); nothing heavy or
secret travels with it: the model is a path or Hub id that each worker loads itself, and the hash key and the
surrogate seed are read from environment variables on the worker (``hash_key_env``, ``seed_env``).
"""
from __future__ import annotations

import json
import logging
import os
import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger("spacy_privfilter.scale")

# Secrets that may not travel inside a spec (they would be pickled to every worker and kept by the engine).
SECRET_OPTIONS = ("hash_key", "seed")
# spaCy's vocab keeps every token string it has seen; a long-lived worker rebuilds its pipeline past this size
# (reusing the loaded model), as the command line does, so that memory stays flat.
VOCAB_RENEW_LIMIT = 100_000
# Test hook for the fault-tolerance tests, off unless this variable names a folder: a worker that is about to
# scrub a batch holding row id N, while the file ``<folder>/kill-row-N`` exists, renames that file (one worker
# wins the rename) and kills its own process, so the engine must retry the batch elsewhere.
FAULT_DIR_ENV = "_SPACY_PRIVFILTER_FAULT_DIR"

_CACHE: dict[str, Any] = {}


@dataclass(frozen=True)
class PipelineSpec:
    """What a worker needs to build the pipeline: component configs and runtime options.

    Args:
        filter_config: ``privacy_filter`` config (``model`` at least: a local folder every worker can read, or a
            Hub id in the workers' cache).
        redactor_config: ``privacy_redactor`` config; None detects only (no redaction).
        lang: language of the blank spaCy pipeline.
        batch_size: documents per ``nlp.pipe`` batch.
        threads: torch threads per worker (its share of the machine's cores); None leaves torch's default.
        seed_env: environment variable holding the surrogate seed, read on the worker.
    """

    filter_config: Mapping[str, Any]
    redactor_config: Mapping[str, Any] | None = field(default_factory=dict)
    lang: str = "xx"
    batch_size: int = 32
    threads: int | None = None
    seed_env: str | None = None

    def __post_init__(self) -> None:
        if "model" not in self.filter_config:
            raise ValueError("filter_config needs a 'model' (a local folder or a Hub id)")
        leaked = [key for key in SECRET_OPTIONS if key in (self.redactor_config or {})]
        if leaked:
            raise ValueError(f"{', '.join(leaked)} may not travel inside a PipelineSpec; put the value in an "
                             f"environment variable on the workers and pass hash_key_env= / seed_env=")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1; got {self.batch_size}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be at least 1; got {self.threads}")

    @property
    def redact(self) -> bool:
        return self.redactor_config is not None

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)

    def build(self, *, detector: Any = None) -> Any:
        """A fresh pipeline; the model is loaded now (or ``detector``, an already loaded one, is reused)."""
        from ..pipeline.build import blank_pipeline

        nlp = blank_pipeline(self.lang, filter_config=self.filter_config)
        component = nlp.get_pipe("privacy_filter")
        if self.redactor_config is not None:
            config = dict(self.redactor_config)
            if self.seed_env:
                if self.seed_env not in os.environ:
                    raise ValueError(f"seed_env names {self.seed_env}, which is not set on this worker")
                config["seed_env"] = self.seed_env  # the redactor reads the seed there, as the string it is
            nlp.add_pipe("privacy_redactor", config=config)
        if detector is not None:
            component.detector = detector
        else:
            component.initialize(nlp=nlp)  # load now: a bad model fails before any row is scrubbed
        return nlp


def worker_nlp(spec: PipelineSpec) -> Any:
    """This process's pipeline for ``spec``: built on first use, then reused for every batch."""
    key = spec.key()
    nlp = _CACHE.get(key)
    if nlp is None:
        set_threads(spec.threads)
        log.info("worker %d: loading the pipeline", os.getpid())
        nlp = _CACHE[key] = spec.build()
    elif len(nlp.vocab) > VOCAB_RENEW_LIMIT:
        nlp = _CACHE[key] = spec.build(detector=nlp.get_pipe("privacy_filter").detector)
    return nlp


def set_threads(threads: int | None) -> None:
    """Give torch ``threads`` intra-op threads, so that N workers on one machine do not oversubscribe it."""
    if threads is None:
        return
    os.environ["OMP_NUM_THREADS"] = str(threads)
    from ..backends.devices import set_torch_threads

    set_torch_threads(threads)


def share_of_cores(workers: int, cores: int | None = None) -> int:
    """Threads per worker when ``workers`` share this machine: its cores split evenly, at least one each."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, workers))


def maybe_fail(row_ids: Any) -> None:
    """The fault-test hook (see ``FAULT_DIR_ENV``); does nothing unless that variable is set."""
    folder = os.environ.get(FAULT_DIR_ENV)
    if not folder:
        return
    for row in row_ids:
        armed = Path(folder) / f"kill-row-{row}"
        if armed.exists():
            try:
                armed.rename(armed.with_name(armed.name + ".fired"))
            except OSError:
                continue  # another worker won the rename; it is the one that dies
            os.kill(os.getpid(), signal.SIGKILL)
