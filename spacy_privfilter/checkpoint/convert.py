"""Convert a Privacy Filter checkpoint (HF, opf or MLX; folder or Hub id) into an OpenMed MLX artifact.

The output is the layout OpenMed's MLX loader reads: ``weights.safetensors`` (opf-style names, fused qkv,
experts ``[E, in, out]`` or packed ``[E, out, in]`` when quantized), ``config.json`` with the ``_mlx_*``
blocks, ``id2label.json`` and the ``openmed-mlx.json`` manifest. Only safetensors are read and written.

Usage::

    python -m spacy_privfilter.checkpoint.convert openai/privacy-filter ./pf-mlx-8bit --to mlx-8bit
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Literal, Sequence, get_args

from ..errors import ConfigError, PrivFilterError
from .discover import inspect_checkpoint
from .hub import resolve_model_path
from .loader import load_state_dict
from .writer import save_checkpoint

ConvertFormat = Literal["mlx-bf16", "mlx-8bit"]
CONVERT_FORMATS: tuple[str, ...] = get_args(ConvertFormat)


def convert(src: str | os.PathLike, dst: str | os.PathLike, *, to: ConvertFormat = "mlx-bf16",
            revision: str | None = None) -> Path:
    """Write ``src`` as an OpenMed MLX artifact in ``dst``.

    Args:
        src: a local checkpoint folder or a Hub repo id (HF, opf or OpenMed MLX format).
        dst: the output folder (created if needed; must differ from the source folder).
        to: "mlx-bf16" (bfloat16 weights) or "mlx-8bit" (affine 8-bit, group size 64, weight-only;
            norms and sinks stay float32, scales are bfloat16).
        revision: Hub revision (branch, tag or commit) when ``src`` is a repo id.

    Returns:
        The artifact folder.

    Raises:
        ConfigError: an unknown ``to`` or ``dst`` equal to the source folder.
        CheckpointError / ModelNotFoundError: the source cannot be found or read.
    """
    if to not in CONVERT_FORMATS:
        raise ConfigError(f"to must be one of {', '.join(CONVERT_FORMATS)}; got {to!r}")
    source = Path(resolve_model_path(src, revision=revision))
    target = Path(dst)
    if target.exists() and target.resolve() == source.resolve():
        raise ConfigError("the output folder must differ from the source checkpoint folder; "
                          "choose another dst")
    info = inspect_checkpoint(source)
    if info.quantization is not None:
        raise ConfigError(f"'{source.name}' is already quantized ({info.quantization.bits}-bit); converting "
                          "it again would stack quantization error. Fix: convert from the dense (HF or bf16) "
                          "checkpoint")
    # numpy keeps this path free of torch and mlx; bf16 values are exact in float32 and rounded back on save
    state_dict = load_state_dict(info)
    return save_checkpoint(state_dict, info.config, target, format=to, dtype="bfloat16",
                           source_model_id=str(src))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spacy-privfilter convert",
        description="Convert a Privacy Filter checkpoint (folder or Hub id) into an OpenMed MLX artifact.")
    parser.add_argument("src", help="checkpoint folder or Hub repo id (HF, opf or MLX format)")
    parser.add_argument("dst", help="output folder for the MLX artifact")
    parser.add_argument("--to", choices=CONVERT_FORMATS, default="mlx-bf16",
                        help="artifact format (default: mlx-bf16)")
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: returns 0 on success, 1 on a checkpoint or option error (message on stderr)."""
    args = build_parser().parse_args(argv)
    try:
        out = convert(args.src, args.dst, to=args.to, revision=args.revision)
    except PrivFilterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
