"""``evaluate``, ``convert``, ``download`` and ``info``."""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import platform
import sys
from itertools import islice
from pathlib import Path
from typing import Any, Iterator

from .inputs import UsageError, valid_unicode
from ..jsonl import read_records
from ..backends.devices import available_devices
from ..evaluate import Evaluation, annotated_labels, span_problem

log = logging.getLogger("spacy_privfilter.cli")
EXIT_OK, EXIT_INPUT = 0, 1


class InputError(Exception):
    """A data or predictions line is unusable; the message names the file and line."""


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` for each non-blank line; bad lines raise InputError naming file and line."""
    return read_records(path, error=InputError)


def _gold(path: Path, args: argparse.Namespace) -> Iterator[tuple[str, int, dict[str, Any], str, list[Any]]]:
    for number, record in read_jsonl(path):
        text, spans = record.get(args.text_key), record.get(args.spans_key)
        if not isinstance(text, str) or not isinstance(spans, list):
            raise InputError(f"{path}:{number}: needs a string {args.text_key!r} and a list {args.spans_key!r}")
        _check_spans(text, spans, f"{path}:{number}")
        yield str(path), number, record, valid_unicode(text, f"{path}:{number}"), spans


def _check_spans(text: str, spans: list[Any], where: str) -> None:
    for i, span in enumerate(spans):
        problem = span_problem(text, span)
        if problem:
            raise InputError(f"{where}: span #{i}: {problem}")


def _predictions(path: Path, args: argparse.Namespace) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, record in read_jsonl(path):
        if not isinstance(record.get("spans"), list):
            raise InputError(f"{path}:{number}: a prediction line needs a list 'spans' (detect output format)")
        yield number, record


def _model_spans(gold: Iterator[Any], args: argparse.Namespace) -> Iterator[tuple[Any, list[Any]]]:
    from .scrub import build_nlp, doc_spans, spans_key_of

    nlp = build_nlp(args, redact=False)
    key = spans_key_of(nlp)
    while batch := list(islice(gold, args.batch_size)):
        for row in batch:  # spaCy's own ValueError would name neither the file nor the line
            if len(row[3]) > nlp.max_length:
                raise InputError(f"{row[0]}:{row[1]}: {len(row[3])} characters, more than spaCy's nlp.max_length "
                                 f"of {nlp.max_length}; split the record")
        for row, doc in zip(batch, nlp.pipe([row[3] for row in batch], batch_size=args.batch_size)):
            yield row, doc_spans(doc, key, with_sources="privacy_patterns" in nlp.pipe_names)


def _with_patterns(pairs: Iterator[tuple[Any, list[Any]]], args: argparse.Namespace) -> Iterator[tuple[Any, list[Any]]]:
    """Precomputed spans (source ``model`` unless they name one) merged with --recognizers/--patterns/--deny/--allow
    by ``privacy_patterns`` in a blank pipeline: what the model plus those rules would have given."""
    from .scrub import add_patterns_pipe, doc_spans, wants_patterns

    if not wants_patterns(args):
        yield from pairs
        return
    from ..pipeline.build import blank
    from ..pipeline.span_groups import write_group
    from ..recognizers import as_found

    nlp = blank(args.lang)
    component = add_patterns_pipe(nlp, args)
    for row, spans in pairs:
        doc = nlp.make_doc(row[3])
        found = [as_found(span) for span in spans]
        aligned = [(doc.char_span(f.start, f.end, label=f.label, alignment_mode="expand"), f) for f in found]
        aligned = [(span, f) for span, f in aligned if span is not None]
        write_group(doc, component.spans_key, [span for span, _ in aligned], [f.score for _, f in aligned],
                    [f.source for _, f in aligned])
        yield row, doc_spans(component(doc), component.spans_key, with_sources=True)


def _paired(gold: Iterator[Any], args: argparse.Namespace) -> Iterator[tuple[Any, list[Any]]]:
    """Gold rows with their predicted spans, from --predictions (line by line) or from the model."""
    if not args.predictions:
        yield from _model_spans(gold, args)
    else:
        yield from _with_patterns(_precomputed(gold, args), args)


def _precomputed(gold: Iterator[Any], args: argparse.Namespace) -> Iterator[tuple[Any, list[Any]]]:
    pred_path = Path(args.predictions)
    preds = _predictions(pred_path, args)
    for row in gold:
        pred = next(preds, None)
        if pred is None:
            raise InputError(f"{pred_path}: has fewer records than the data (ran out at {row[0]}:{row[1]})")
        number, record = pred
        if "id" in record and "id" in row[2] and record["id"] != row[2]["id"]:
            raise InputError(f"{pred_path}:{number}: id does not match {row[0]}:{row[1]}; predictions must be in "
                             f"data order")
        _check_spans(row[3], record["spans"], f"{pred_path}:{number}")
        yield row, record["spans"]
    extra = next(preds, None)
    if extra is not None:
        raise InputError(f"{pred_path}:{extra[0]}: more prediction records than data records")


def run_evaluate(args: argparse.Namespace) -> int:
    paths = [Path(p) for p in args.data]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise UsageError(f"no such data file: {', '.join(missing)}")
    if args.predictions and not Path(args.predictions).is_file():
        raise UsageError(f"no such predictions file: {args.predictions}")

    def gold() -> Iterator[Any]:
        for path in paths:
            yield from _gold(path, args)

    try:
        annotated = None
        if args.ignore_unannotated_labels:
            # A cheap first pass: which labels each source annotates (the records are not kept).
            annotated = annotated_labels({"source": r[2].get("source") or r[0], "spans": r[4]} for r in gold())
        evaluation = Evaluation(annotated=annotated)
        for (path, _, record, text, spans), pred in _paired(gold(), args):
            evaluation.add(text, spans, pred, source=str(record.get("source") or path))
    except InputError as exc:
        log.error("%s", exc)
        return EXIT_INPUT
    if args.json:
        print(json.dumps(evaluation.as_dict(), indent=2))
    else:
        print(evaluation.format_table())
    return EXIT_OK


def run_convert(args: argparse.Namespace) -> int:
    from ..checkpoint.convert import convert

    log.info("converting %s to %s", args.src, args.to)
    out = convert(args.src, args.dst, to=args.to, revision=args.revision)
    if not args.quiet:
        print(f"wrote {args.to} checkpoint to {out}", file=sys.stderr)
    return EXIT_OK


def run_download(args: argparse.Namespace) -> int:
    from ..checkpoint.hub import resolve_model_path
    from ..tokens import get_tokenizer

    folder = resolve_model_path(args.model, revision=args.revision, cache_dir=args.cache_dir)
    get_tokenizer()  # the o200k_base encoding is cached by tiktoken; fetch it now too, for offline use
    files = sorted(p.name for p in Path(folder).iterdir() if p.is_file())
    if not args.quiet:
        print(f"{args.model}: {len(files)} file(s) in {folder}", file=sys.stderr)
    print(folder)
    return EXIT_OK


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cached_models(hub_cache: str | None) -> list[str]:
    """Privacy Filter repos in the Hub cache (names only, no network)."""
    if not hub_cache or not Path(hub_cache).is_dir():
        return []
    prefix = "models--"
    return sorted(entry.name[len(prefix):].replace("--", "/") for entry in Path(hub_cache).iterdir()
                  if entry.name.startswith(prefix) and "privacy-filter" in entry.name.lower())


def info_dict() -> dict[str, Any]:
    from .. import __version__
    from .._compat import has_mlx, has_torch
    from ..backends import select_backend

    packages = ("spacy", "numpy", "tiktoken", "safetensors", "huggingface_hub", "torch", "mlx", "faker", "tqdm")
    try:
        auto = select_backend("auto")
    except Exception as exc:
        auto = f"none ({type(exc).__name__})"
    try:
        from huggingface_hub import constants

        hub_cache = os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE
    except ImportError:
        hub_cache = None
    return {
        "cached_models": _cached_models(hub_cache),
        "spacy_privfilter": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in packages},
        "backends": {"torch": has_torch(), "mlx": has_mlx(), "auto": auto},
        "devices": available_devices(),
        "hf_hub_cache": hub_cache,
        "hf_hub_offline": os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False"),
        "tiktoken_cache": os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR"),
    }


def run_info(args: argparse.Namespace) -> int:
    data = info_dict()
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    print(f"spacy-privfilter {data['spacy_privfilter']} (python {data['python']}, {data['platform']})")
    print("packages: " + ", ".join(f"{k} {v}" for k, v in data["packages"].items() if v))
    missing = [k for k, v in data["packages"].items() if not v]
    if missing:
        print("not installed: " + ", ".join(missing))
    print(f"backends: torch={'yes' if data['backends']['torch'] else 'no'}, "
          f"mlx={'yes' if data['backends']['mlx'] else 'no'}, auto -> {data['backends']['auto']}")
    for name, devices in data["devices"].items():
        print(f"devices ({name}): {', '.join(devices)}")
    print(f"model cache (Hugging Face): {data['hf_hub_cache']}" + (" [offline]" if data["hf_hub_offline"] else ""))
    print("cached Privacy Filter models: " + (", ".join(data["cached_models"]) or "none"))
    print(f"tokenizer cache (tiktoken): {data['tiktoken_cache'] or 'tiktoken default (temp folder)'}")
    return EXIT_OK
