"""Random checkpoints for timing, written once into the cache folder with the project's own writer.

Speed depends only on shapes, so seeded random weights are valid for timing. ``full`` is the real
architecture (hidden 640, 8 layers, 128 experts top-4, vocab 200064, 221 labels); ``tiny`` keeps the
real vocabulary (tiktoken ids index it) and label set but shrinks everything else, for smoke tests.

Usage (run as a subprocess by ``python -m benchmarks``, so the parent stays small):
    python -m benchmarks.checkpoints CACHE_DIR SIZE FORMAT [FORMAT ...]
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

SEED = 1234
STAMP = "benchmark-stamp.json"
TINY_OVERRIDES = dict(hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, num_local_experts=8, num_experts_per_tok=4,
                      sliding_window=16)


def benchmark_config(size: str):
    """The ModelConfig for ``size`` ("full" or "tiny")."""
    from spacy_privfilter.testing import full_config

    config = full_config().with_updates(dtype="bfloat16")
    if size == "tiny":
        config = config.with_updates(**TINY_OVERRIDES)
    elif size != "full":
        raise ValueError(f"size must be 'full' or 'tiny'; got {size!r}")
    return config


def checkpoint_dir(cache_dir: Path, size: str, fmt: str) -> Path:
    return Path(cache_dir) / f"{size}-{fmt}"


def is_ready(cache_dir: Path, size: str, fmt: str) -> bool:
    """True when the folder holds a checkpoint written with the current config and seed."""
    stamp = checkpoint_dir(cache_dir, size, fmt) / STAMP
    if not stamp.is_file():
        return False
    try:
        return json.loads(stamp.read_text(encoding="utf-8")).get("key") == _key(size, fmt)
    except (OSError, ValueError):
        return False


def ensure(cache_dir: Path, size: str, fmt: str) -> Path:
    """Write the checkpoint unless a matching one is cached; returns its folder."""
    dst = checkpoint_dir(cache_dir, size, fmt)
    if is_ready(cache_dir, size, fmt):
        return dst
    from spacy_privfilter.testing import write_random_checkpoint

    tmp = dst.with_name(dst.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # Written into a side folder and renamed at the end, so an interrupted run never leaves half a checkpoint.
    write_random_checkpoint(tmp, benchmark_config(size), format=fmt, seed=SEED, dtype="bfloat16")
    stamp = {"key": _key(size, fmt), "size": size, "format": fmt}
    (tmp / STAMP).write_text(json.dumps(stamp), encoding="utf-8")
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    return dst


def _key(size: str, fmt: str) -> str:
    # The config is part of the key so that a changed TINY_OVERRIDES (or seed) regenerates the cache.
    text = json.dumps({"size": size, "format": fmt, "seed": SEED, "tiny": TINY_OVERRIDES}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def main(argv: list[str]) -> int:
    from . import setup_environment

    setup_environment()
    cache_dir, size, formats = Path(argv[0]), argv[1], argv[2:]
    for fmt in formats:
        print(f"checkpoint {size}-{fmt}: {ensure(cache_dir, size, fmt)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
