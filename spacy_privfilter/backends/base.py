"""The small protocol every runtime implements, and the option values shared by all runtimes.

A backend has one job: token ids in, float32 logits out. Everything downstream (Viterbi,
spans, spaCy) is framework-free and is tested with a fake backend that returns fixed logits.
This module imports no framework, so settings and the CLI can take their choices from here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping, Protocol, get_args, runtime_checkable

import numpy as np

from ..config import ModelConfig
from ..errors import ConfigError

Backend = Literal["auto", "torch", "mlx"]
"""Which runtime runs the model; "auto" picks by availability (see ``select_backend``)."""
DType = Literal["auto", "float32", "bfloat16", "float16"]
"""Weight dtype at run time; "auto" follows the checkpoint."""
QuantizedExpertsMode = Literal["keep", "dequantize"]
"""torch: keep 8-bit expert weights 8-bit in memory, or dequantize them once at load."""
ExpertPrecision = Literal["auto", "float32", "bfloat16"]
"""torch: the dtype of the expert matmuls ("auto": the weights' dtype)."""
ExpertKernel = Literal["auto", "native", "torch"]
"""torch: what runs the expert matmuls: the native AVX-512 BF16 kernel (backends/native.py), torch's own
kernels, or "auto": native wherever it applies and builds."""

BACKENDS: tuple[str, ...] = get_args(Backend)
DTYPES: tuple[str, ...] = get_args(DType)
QUANTIZED_EXPERTS_MODES: tuple[str, ...] = get_args(QuantizedExpertsMode)
EXPERT_PRECISIONS: tuple[str, ...] = get_args(ExpertPrecision)
EXPERT_KERNELS: tuple[str, ...] = get_args(ExpertKernel)

PACK_EXPERTS: tuple[Any, ...] = (None, True, False)
"""torch: pack the experts for oneDNN (None: wherever it applies; True: required; False: never)."""

RUNTIME_OPTIONS: dict[str, dict[str, tuple[Any, ...]]] = {
    "torch": {"quantized_experts": QUANTIZED_EXPERTS_MODES, "expert_precision": EXPERT_PRECISIONS,
              "pack_experts": PACK_EXPERTS, "expert_kernel": EXPERT_KERNELS},
    "mlx": {},
}
"""The options a user may pass to each runtime (component ``runtime_options``, CLI flags), with valid values."""


def _shown(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def check_runtime_options(backend: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` as a plain dict, or ConfigError naming the bad key and the valid choices for ``backend``.

    ``backend`` is a resolved runtime name, or "auto" when none can be chosen yet: then an option is accepted
    if some runtime takes it (the runtime checks again when it loads).
    """
    if not isinstance(options, Mapping):
        raise ConfigError(f"runtime options must be a mapping of option names to values; got "
                          f"{type(options).__name__}")
    if backend == "auto":
        table: dict[str, tuple[Any, ...]] = {}
        for per_backend in RUNTIME_OPTIONS.values():
            table.update(per_backend)
    else:
        table = RUNTIME_OPTIONS.get(backend, {})
    for key, value in options.items():
        if key not in table:
            valid = ", ".join(table) or "none"
            where = [name for name, known in RUNTIME_OPTIONS.items() if key in known]
            hint = f" ({key} applies to the {' and '.join(where)} backend only)" if where else ""
            raise ConfigError(f"unknown runtime option {key!r} for backend {backend!r}{hint}; valid options: {valid}")
        # type and value both: True == 1 in Python, but 1 is not a valid pack_experts value
        if not any(type(value) is type(choice) and value == choice for choice in table[key]):
            given = _shown(value) if isinstance(value, (str, int, float, type(None))) else type(value).__name__
            raise ConfigError(f"runtime option {key!r} must be one of {', '.join(map(_shown, table[key]))}; "
                              f"got {given}")
    return dict(options)


@runtime_checkable
class ModelBackend(Protocol):
    """A loaded model.

    Attributes:
        config: the model's ModelConfig (``config.id2label`` gives the label names).
        name: short runtime name, e.g. ``"torch"``, ``"mlx"``, ``"fake"``.
        model_path: the local checkpoint folder the weights came from (None when built from memory);
            files shipped beside the weights, such as ``o200k_base.tiktoken``, are found there.
        viterbi_biases: the checkpoint's calibrated transition biases, or None.
    """

    config: ModelConfig
    name: str
    model_path: Path | None
    viterbi_biases: Mapping[str, float] | None

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Run the model.

        Args:
            input_ids: int64 array of shape (batch, seq), right-padded.
            attention_mask: bool (or 0/1 int) array of shape (batch, seq); False marks padding.
        Returns:
            float32 array of shape (batch, seq, num_labels). Rows at padded positions are unspecified.
        """
        ...


__all__ = ["BACKENDS", "DTYPES", "EXPERT_KERNELS", "EXPERT_PRECISIONS", "PACK_EXPERTS", "QUANTIZED_EXPERTS_MODES",
           "RUNTIME_OPTIONS", "Backend", "DType", "ExpertKernel", "ExpertPrecision", "ModelBackend",
           "QuantizedExpertsMode", "check_runtime_options"]
