"""``calibrate`` and ``train``: adapt the decoder or the model to labelled data (JSONL spans or DocBin)."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Callable, get_args

from .inputs import UsageError

log = logging.getLogger("spacy_privfilter.cli")
EXIT_OK = 0
COMMANDS = ("calibrate", "train")

CALIBRATE_EPILOG = """\
examples:
  spacy-privfilter calibrate gold.jsonl -o viterbi_calibration.json
  spacy-privfilter calibrate gold.jsonl more.spacy -o cal.json --recall-target 0.95 --model ./my-model
  spacy-privfilter calibrate gold.jsonl -o cal.json --label-map NAME=private_person --json > report.json

The model runs once over the data; the six Viterbi transition biases and per-label thresholds are fitted to
maximise span F-beta (default beta 2) or to reach --recall-target at the best precision. P/R/F before and
after are printed for a held-out part of the data (split by text hash). Use the file with the component's
'calibration' setting, or put it into the model folder.
"""

TRAIN_EPILOG = """\
examples:
  spacy-privfilter train gold.jsonl --model OpenMed/privacy-filter-nemotron -o ./pf-tuned
  spacy-privfilter train notes.spacy --model ./pf -o ./pf-head --mode head --epochs 5
  spacy-privfilter train gold.jsonl --model ./pf -o ./pf-new --extend-labels --mode lora --device cuda

Writes a Hugging Face checkpoint (adapters merged) with viterbi_calibration.json fitted on the dev split;
every backend, `convert` and the spaCy component load it. OUT must be a new or empty folder.
"""


def _add_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", nargs="+", metavar="DATA", help="labelled .jsonl (text + spans) or .spacy (DocBin) files")
    g = p.add_argument_group("data")
    g.add_argument("--text-key", default="text", help="JSONL key of the text (default: %(default)s)")
    g.add_argument("--spans-key", default="spans",
                   help="JSONL key of the spans, and the DocBin doc.spans group (default: %(default)s; "
                        "docs without it use doc.ents)")
    g.add_argument("--label-map", action="append", default=[], metavar="DATA=MODEL",
                   help="rename a data label to a model class (repeatable)")


def _add_model(p: argparse.ArgumentParser, *, required: bool) -> None:
    from ..detector import DEFAULT_MODEL
    g = p.add_argument_group("model")
    if required:
        g.add_argument("--model", required=True, help="Hub repo id or local checkpoint folder to start from")
    else:
        g.add_argument("--model", default=DEFAULT_MODEL, help="Hub repo id or local folder (default: %(default)s)")
    g.add_argument("--revision", help="Hub revision (branch, tag or commit)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    g.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto")


def add_commands(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``calibrate`` and ``train`` on the main parser's subcommands."""
    from ..training.options import Precision, SaveDtype, TrainMode
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser("calibrate", help="fit Viterbi biases and label thresholds to labelled data",
                       formatter_class=fmt, epilog=CALIBRATE_EPILOG)
    _add_data(p)
    p.add_argument("-o", "--output", required=True, help="calibration file to write (viterbi_calibration.json)")
    g = p.add_argument_group("goal")
    g.add_argument("--beta", type=float, default=2.0, help="maximise span F-beta (default: %(default)s)")
    g.add_argument("--recall-target", type=float, help="instead: reach this recall (0-1) at the best precision")
    g.add_argument("--heldout-fraction", type=float, default=0.25,
                   help="share of documents held out for the before/after report (default: %(default)s)")
    g.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    g.add_argument("--backend", choices=("auto", "torch", "mlx"), default="auto", help="runtime (default: auto)")
    _add_model(p, required=False)
    add_common(p)

    p = sub.add_parser("train", help="fine-tune a checkpoint on labelled data (PyTorch)", formatter_class=fmt,
                       epilog=TRAIN_EPILOG)
    _add_data(p)
    p.add_argument("-o", "--output", required=True, help="new folder for the fine-tuned checkpoint")
    _add_model(p, required=True)
    g = p.add_argument_group("training")
    g.add_argument("--mode", choices=get_args(TrainMode), default="lora",
                   help="what trains: head (classifier), lora (adapters + classifier) or full (default: %(default)s)")
    g.add_argument("--epochs", type=int, default=3)
    g.add_argument("--batch-size", type=int, default=8, help="sequences per step (default: %(default)s)")
    g.add_argument("--max-tokens", type=int, default=256, help="tokens per training sequence (default: %(default)s)")
    g.add_argument("--learning-rate", type=float, help="default: head 1e-3, lora 2e-4, full 2e-5")
    g.add_argument("--lora-rank", type=int, default=8)
    g.add_argument("--lora-alpha", type=float, default=16.0)
    g.add_argument("--dev-fraction", type=float, default=0.1,
                   help="share of documents for dev evaluation, early stopping and calibration (default: %(default)s)")
    g.add_argument("--patience", type=int, default=2, help="epochs without dev F1 gain before stopping")
    g.add_argument("--extend-labels", action="store_true", help="add data labels the model lacks as new classes")
    g.add_argument("--no-gradient-checkpointing", action="store_true", help="faster, more memory")
    g.add_argument("--precision", choices=get_args(Precision), default="auto",
                   help="auto: bf16 autocast when the model runs in bf16")
    g.add_argument("--save-dtype", choices=get_args(SaveDtype), default="float32")
    g.add_argument("--no-calibrate", action="store_true", help="do not fit viterbi_calibration.json on the dev split")
    g.add_argument("--seed", type=int, default=0)
    add_common(p)


def _label_map(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        source, sep, target = pair.partition("=")
        if not sep or not source or not target:
            raise UsageError(f"--label-map needs DATA=MODEL; got {pair!r}")
        out[source] = target
    return out


def _docs(args: argparse.Namespace) -> list[Any]:
    from ..training import load_examples
    return load_examples(args.data, text_key=args.text_key, spans_key=args.spans_key,
                         label_map=_label_map(args.label_map))


def _check_output(args: argparse.Namespace) -> Path:
    out = Path(args.output)
    if any(out.resolve() == Path(d).resolve() for d in args.data):
        raise UsageError("the output would overwrite an input file; choose another -o")
    return out


def run_calibrate(args: argparse.Namespace) -> int:
    from ..detector import Detector
    from ..training import calibrate, write_operating_point

    out = _check_output(args)
    docs = _docs(args)
    log.info("loading model %s", args.model)
    detector = Detector.from_pretrained(args.model, revision=args.revision, backend=args.backend,
                                        device=args.device, dtype=args.dtype)
    report = calibrate(detector, docs, beta=args.beta, recall_target=args.recall_target,
                       heldout_fraction=args.heldout_fraction)
    write_operating_point(out, report.operating_point)
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.format_table())
    log.info("wrote %s", out)
    return EXIT_OK


def run_train(args: argparse.Namespace) -> int:
    from ..training import TrainConfig, train

    out = _check_output(args)
    config = TrainConfig(mode=args.mode, epochs=args.epochs, batch_size=args.batch_size, max_tokens=args.max_tokens,
                         learning_rate=args.learning_rate, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
                         dev_fraction=args.dev_fraction, patience=args.patience, extend_labels=args.extend_labels,
                         gradient_checkpointing=not args.no_gradient_checkpointing, precision=args.precision,
                         seed=args.seed, calibrate=not args.no_calibrate, save_dtype=args.save_dtype)
    result = train(args.model, _docs(args), out, config=config, revision=args.revision, device=args.device,
                   dtype=args.dtype, progress=not args.quiet)
    for record in result.history:
        print("epoch " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()
                                    if k != "epoch") + f" (epoch {record['epoch']})")
    if result.calibration is not None:
        print(result.calibration.format_table())
    print(f"saved {result.path} (best epoch {result.best_epoch})")
    return EXIT_OK
