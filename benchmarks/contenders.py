"""The contenders: how each one loads and runs one forward pass (token ids in, float32 logits out).

Frameworks are imported inside the load functions only, which run in a worker subprocess.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

# Checkpoint formats the cache holds (names of spacy_privfilter.testing's writer).
HF, MLX_BF16, MLX_8BIT = "hf", "mlx-bf16", "mlx-8bit"


@dataclass(frozen=True)
class Contender:
    """One implementation under test.

    Attributes:
        name: short id used on the command line (``--only``) and in tables.
        label: what the table calls it.
        kind: ``project`` (spacy_privfilter backend), ``hf`` (transformers) or ``openmed``.
        checkpoint: which cached checkpoint format it reads.
        backend/dtype: for project contenders, the ``load_backend`` arguments.
        experts: transformers ``experts_implementation``.
        quadratic: attention builds a T x T score matrix (memory grows with T^2).
        requires: modules that must be importable, else the contender is skipped.
        devices: devices it runs on.
        pipe: also run the spaCy ``nlp.pipe`` workload through the ``privacy_filter`` component.
        cold: also measure cold start.
    """

    name: str
    label: str
    kind: str
    checkpoint: str
    backend: str = "torch"
    dtype: str = "auto"
    experts: str = "eager"
    quadratic: bool = False
    requires: tuple[str, ...] = ()
    devices: tuple[str, ...] = ("cpu", "cuda")
    pipe: bool = False
    cold: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)


CONTENDERS: tuple[Contender, ...] = (
    Contender("torch-bf16", "spacy-privfilter torch bf16", "project", HF, dtype="bfloat16",
              requires=("torch",), pipe=True, cold=True),
    Contender("torch-fp32", "spacy-privfilter torch fp32", "project", HF, dtype="float32",
              requires=("torch",)),
    Contender("torch-int8", "spacy-privfilter torch 8-bit", "project", MLX_8BIT, dtype="auto",
              requires=("torch",), cold=True),
    Contender("mlx-bf16", "spacy-privfilter MLX bf16", "project", MLX_BF16, backend="mlx",
              requires=("mlx.core",), devices=("cpu",)),
    Contender("mlx-int8", "spacy-privfilter MLX 8-bit", "project", MLX_8BIT, backend="mlx",
              requires=("mlx.core",), devices=("cpu",)),
    Contender("hf-eager", "transformers eager (reference)", "hf", HF, experts="eager", quadratic=True,
              requires=("torch", "transformers"), cold=True),
    Contender("hf-grouped_mm", "transformers grouped_mm", "hf", HF, experts="grouped_mm", quadratic=True,
              requires=("torch", "transformers")),
    Contender("openmed-mlx-int8", "OpenMed MLX 8-bit", "openmed", MLX_8BIT, quadratic=False,
              requires=("openmed", "mlx.core"), devices=("cpu",)),
)
BASELINE = "hf-eager"


def by_name(name: str) -> Contender:
    for contender in CONTENDERS:
        if contender.name == name:
            return contender
    raise KeyError(f"unknown contender {name!r}; choose from {', '.join(c.name for c in CONTENDERS)}")


def missing_requirement(contender: Contender) -> str | None:
    """The first required module that does not import (checked without importing it), else None."""
    for module in contender.requires:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return module
    return None


def quadratic_bytes(contender: Contender, *, batch: int, seq: int, num_heads: int) -> int:
    """Rough peak of eager attention: scores, mask, softmax and sink-concat copies, float32, per layer."""
    if not contender.quadratic:
        return 0
    return 4 * 4 * num_heads * batch * seq * seq


@dataclass
class Runner:
    """A loaded contender: ``forward(input_ids [B, T] int64, attention_mask [B, T] bool)`` -> logits."""

    forward: Callable[[np.ndarray, np.ndarray], np.ndarray]
    num_heads: int
    handle: object = None


def load(contender: Contender, checkpoint_dir: Path, *, device: str) -> Runner:
    """Load ``contender`` from ``checkpoint_dir`` onto ``device``."""
    if contender.kind == "project":
        return _load_project(contender, checkpoint_dir, device)
    if contender.kind == "hf":
        return _load_hf(contender, checkpoint_dir, device)
    if contender.kind == "openmed":
        return _load_openmed(checkpoint_dir)
    raise ValueError(f"unknown contender kind {contender.kind!r}")


def _load_project(contender: Contender, checkpoint_dir: Path, device: str) -> Runner:
    from spacy_privfilter.backends import load_backend

    backend = load_backend(checkpoint_dir, backend=contender.backend, device=device, dtype=contender.dtype)
    return Runner(forward=backend.logits, num_heads=backend.config.num_attention_heads, handle=backend)


def _load_hf(contender: Contender, checkpoint_dir: Path, device: str) -> Runner:
    import torch
    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_pretrained(
        str(checkpoint_dir), experts_implementation=contender.experts)
    model = model.to(device).eval()

    def forward(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            ids = torch.from_numpy(np.ascontiguousarray(input_ids)).to(device)
            mask = torch.from_numpy(np.asarray(attention_mask, dtype=np.int64)).to(device)
            out = model(input_ids=ids, attention_mask=mask)
            return out.logits.float().cpu().numpy()

    return Runner(forward=forward, num_heads=model.config.num_attention_heads, handle=model)


def _load_openmed(checkpoint_dir: Path) -> Runner:
    import mlx.core as mx
    from openmed.mlx.inference import PrivacyFilterMLXPipeline

    pipeline = PrivacyFilterMLXPipeline(str(checkpoint_dir))

    def forward(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        logits = pipeline.model(mx.array(input_ids.astype(np.int32)),
                                attention_mask=mx.array(np.asarray(attention_mask, dtype=bool)))
        mx.eval(logits)
        return np.asarray(logits.astype(mx.float32))

    heads = int(pipeline.config.get("num_attention_heads", 14))
    return Runner(forward=forward, num_heads=heads, handle=pipeline)
