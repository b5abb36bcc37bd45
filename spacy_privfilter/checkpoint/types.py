"""Option values of the checkpoint package."""
from __future__ import annotations

from typing import Literal

SaveFormat = Literal["hf", "opf", "mlx-bf16", "mlx-8bit"]
