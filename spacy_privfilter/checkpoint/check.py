"""The one tensor checker: every missing, unexpected, mis-shaped and wrongly typed tensor in one error.

Used on safetensors headers before any data is read (loading), on state dicts before anything is written
(saving), and by each backend before it builds its model, so all of them report problems the same way.
"""
from __future__ import annotations

from typing import Any, Callable, Collection, Mapping

from ..errors import CheckpointError
from .types import QuantizedWeight

MAX_LISTED = 12
EXPERT_TENSORS = ("experts.gate_up_proj", "experts.down_proj")  # stored transposed when quantized


def listing(items: list[str], limit: int = MAX_LISTED) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def check_tensors(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...] | None], *,
                  what: str, dtypes: Mapping[str, str] | None = None,
                  allowed_dtypes: Callable[[str], tuple[str, ...]] | None = None,
                  optional: Collection[str] = (), fix: str = "") -> None:
    """Raise one CheckpointError listing every difference between ``expected`` and ``found``.

    Args:
        expected: tensor name -> shape the config implies.
        found: tensor name -> shape present (None: not known yet, e.g. a lazily computed tensor).
        what: start of the message, naming what does not match what (and the files involved).
        dtypes, allowed_dtypes: the dtype name of each found tensor and the names allowed for a tensor;
            dtypes are checked only when both are given.
        optional: expected names that may be absent.
        fix: how to repair it, appended to the message.
    """
    missing = sorted(set(expected) - set(found) - set(optional))
    unexpected = sorted(set(found) - set(expected))
    common = sorted(set(expected) & set(found))
    misshaped = [f"{name} {list(found[name])} (expected {list(expected[name])})" for name in common
                 if found[name] is not None and tuple(found[name]) != tuple(expected[name])]
    mistyped = []
    if dtypes is not None and allowed_dtypes is not None:
        for name in common:
            allowed = allowed_dtypes(name)
            if dtypes[name] not in allowed:
                mistyped.append(f"{name} {dtypes[name]} (expected {' or '.join(allowed)})")
    parts = [f"{len(items)} {title}: {listing(items)}" for title, items in
             (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped),
              ("of the wrong dtype", mistyped)) if items]
    if parts:
        raise CheckpointError(f"{what}: " + "; ".join(parts) + (f". Fix: {fix}" if fix else ""))


def dense_shape(name: str, value: Any) -> tuple[int, ...]:
    """The canonical (dense) shape a state dict value stands for, read from ``.shape`` attributes only.

    A QuantizedWeight packs ``32 // bits`` codes per uint32 word; quantized expert tensors are stored
    transposed ([E, out, in]) while their canonical shape is [E, in, out].
    """
    if not isinstance(value, QuantizedWeight):
        return tuple(int(d) for d in value.shape)
    *lead, rows, words = (int(d) for d in value.weight.shape)
    if name.endswith(EXPERT_TENSORS):
        return (*lead, words * 32 // value.bits, rows)
    return (*lead, rows, words * 32 // value.bits)


__all__ = ["EXPERT_TENSORS", "check_tensors", "dense_shape", "listing"]
