"""Benchmark suite: speed, memory and scaling of spacy-privfilter next to the reference implementations.

Run ``python -m benchmarks [--quick] [--device cpu|cuda] [--only NAME ...]``. Every contender runs in its
own subprocess so that its peak resident memory is its own; the parent process never imports torch or
mlx. Results go to ``benchmarks/results/`` as a markdown table, a PNG plot and the raw JSON.

Modules, in the order the data flows:
    checkpoints  random full-size (or tiny) checkpoints, written once into ``benchmarks/cache/``
    workloads    token-exact single texts, a batch of short texts, realistic documents (seeded)
    contenders   how each contender loads and runs one forward pass
    worker       one subprocess: load one contender, time every workload, print JSON
    coldstart    one subprocess: import + load + first document, timed from the outside
    report       markdown tables and the tokens/s-vs-length plot
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CACHE_DIR = PACKAGE_DIR / "cache"
RESULTS_DIR = PACKAGE_DIR / "results"
_SHARED_TIKTOKEN = PACKAGE_DIR.parent.parent / "shared" / "tokenizers" / "tiktoken_cache"


def setup_environment() -> None:
    """Use the shared offline tiktoken cache when present (like tests/conftest.py) and never hit the Hub."""
    if _SHARED_TIKTOKEN.is_dir():
        os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(_SHARED_TIKTOKEN))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
