"""``spacy-privfilter`` (also ``python -m spacy_privfilter``): scrub files and streams from the shell.

Commands: redact, detect, evaluate, convert, download, info. Exit codes: 0 success, 1 some inputs (or the
model) failed, 2 the command line is wrong, 130 interrupted. Messages never contain document text.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from typing import Callable, Sequence, get_args

from .inputs import FORMATS, UsageError
from ..scale.engines import ENGINES
from ..scale.fields import OnError, OnMissing
from ..errors import ConfigError, PrivFilterError
from ..backends.base import BACKENDS, DTYPES, EXPERT_KERNELS, EXPERT_PRECISIONS, QUANTIZED_EXPERTS_MODES
from ..checkpoint.convert import CONVERT_FORMATS
from ..pipeline.settings import ALIGNMENT_MODES
from ..redaction.values import STYLES

EXIT_OK, EXIT_INPUT, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

MAIN_EPILOG = """\
examples:
  spacy-privfilter redact notes.txt                      redacted text on stdout
  spacy-privfilter redact notes/ -o scrubbed/            a whole folder, tree mirrored
  spacy-privfilter redact export.jsonl -o clean.jsonl --text-key body
  cat mail.txt | spacy-privfilter redact - --style mask
  spacy-privfilter detect export.jsonl -o spans.jsonl
  spacy-privfilter evaluate gold.jsonl --predictions spans.jsonl
  spacy-privfilter download OpenMed/privacy-filter-nemotron
  spacy-privfilter info

exit codes: 0 ok, 1 some inputs failed (the others are written), 2 usage error, 130 interrupted.
"""

REDACT_EPILOG = """\
examples:
  spacy-privfilter redact letter.txt -o letter.redacted.txt
  spacy-privfilter redact notes/ -o scrubbed/ --glob '*.txt'
  spacy-privfilter redact export.jsonl -o clean.jsonl --text-key body --batch-size 64
  spacy-privfilter redact big.jsonl -o clean.jsonl --resume        continue an interrupted run
  spacy-privfilter redact mail.jsonl -o clean.jsonl --text-key subject --text-key note.body
  spacy-privfilter redact lake/ -o clean/ --text-key body --engine ray --workers 4   CSV/Parquet/JSONL folder
  cat notes.txt | spacy-privfilter redact - --format lines --style mask --keep-last 4
  PRIVFILTER_HASH_KEY="$(cat key.txt)" spacy-privfilter redact notes/ -o out/ --style hash   (16+ bytes)
  PRIVFILTER_SURROGATE_SEED=... spacy-privfilter redact notes/ -o out/ --label-style date=surrogate

Text files become text files; JSONL records keep every key and CSV/Parquet rows every column, with the text
fields replaced.
Without -o the result goes to stdout (one input only). A folder or several inputs need -o FOLDER.
"""

DETECT_EPILOG = """\
examples:
  spacy-privfilter detect export.jsonl -o spans.jsonl
  spacy-privfilter detect notes/ -o spans.jsonl --threshold 0.5
  echo "Call Anna at 555-0100" | spacy-privfilter detect - --with-text

One JSON line per document: JSONL inputs keep their keys (minus the text unless --with-text), text files
get "file"; "spans" holds {start, end, label, score} with character offsets (code points, end exclusive).
"""

EVALUATE_EPILOG = """\
examples:
  spacy-privfilter evaluate gold.jsonl                              run the model, then score
  spacy-privfilter evaluate gold.jsonl --predictions spans.jsonl    score precomputed spans (no model)
  spacy-privfilter evaluate gold.jsonl --ignore-unannotated-labels --json > report.json

gold.jsonl: {"text": ..., "spans": [{"start", "end", "label"}], "source": ...} per line. Predictions use the
format that `detect` writes, one line per gold line, in the same order.
"""


def _add_common(p: argparse.ArgumentParser, suffix: str = "") -> None:
    """-q/-v; the main parser's copies (``suffix`` "_top") are added to the subcommand's in ``main``, so that
    both ``spacy-privfilter -v redact ...`` and ``spacy-privfilter redact ... -v`` work."""
    g = p.add_argument_group("output detail")
    g.add_argument("-q", "--quiet", action="count", default=0, dest=f"quiet{suffix}",
                   help="only errors (no progress bar, no summary)")
    g.add_argument("-v", "--verbose", action="count", default=0, dest=f"verbose{suffix}",
                   help="more detail (-vv for debug)")


# -- value checks: a bad value is a usage error (exit 2) that names its flag, before any model is loaded --------
def unit_float(text: str) -> float:
    """A number in [0, 1] (nan and inf are not)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1; got {text!r}") from None
    if not 0.0 <= value <= 1.0:  # also false for nan
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1; got {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1; got {text!r}")
    return value


def encoding_name(text: str) -> str:
    import codecs

    try:
        codecs.lookup(text)
    except LookupError:
        raise argparse.ArgumentTypeError(f"unknown text encoding {text!r}; e.g. utf-8, utf-16, latin-1, "
                                         f"cp1252") from None
    return text


def option_hint(message: str, args: argparse.Namespace) -> str:
    """`` (option --x-y)`` for the first quoted setting name in ``message`` that is also a command-line option."""
    for name in re.findall(r"'([a-z_]+)'", message):
        if name in vars(args) and name not in ("command", "inputs"):
            return f" (option --{name.replace('_', '-')})"
    return ""


def _add_model(p: argparse.ArgumentParser) -> None:
    from ..detector import DEFAULT_MODEL
    g = p.add_argument_group("model")
    g.add_argument("--model", default=DEFAULT_MODEL, help="Hub repo id or local folder (default: %(default)s)")
    g.add_argument("--revision", help="Hub revision (branch, tag or commit)")
    g.add_argument("--backend", choices=BACKENDS, default="auto", help="runtime (default: auto)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    g.add_argument("--dtype", choices=DTYPES, default="auto")
    g.add_argument("--threshold", type=unit_float, help="drop spans scoring below this (0-1)")
    g.add_argument("--label-threshold", action="append", default=[], metavar="LABEL=SCORE",
                   help="per-label threshold (repeatable)")
    g.add_argument("--labels", help="comma-separated labels to keep (default: all)")
    g.add_argument("--max-batch-tokens", type=positive_int, help="tokens per model call")
    g.add_argument("--alignment-mode", choices=ALIGNMENT_MODES,
                   help="how detected spans snap to spaCy tokens (default: expand)")
    g.add_argument("--batch-size", type=int, default=32, help="documents per batch (default: %(default)s)")
    g.add_argument("--lang", default="xx", help="spaCy language of the blank pipeline (default: %(default)s)")
    _add_runtime_options(p)


def _add_runtime_options(p: argparse.ArgumentParser) -> None:
    """The component's ``runtime_options``; unset flags leave the runtime's defaults."""
    g = p.add_argument_group("runtime (torch)")
    g.add_argument("--quantized-experts", choices=QUANTIZED_EXPERTS_MODES,
                   help="8-bit experts: keep them 8-bit (less memory) or dequantize at load (faster)")
    g.add_argument("--expert-precision", choices=EXPERT_PRECISIONS, help="dtype of the expert matmuls")
    g.add_argument("--pack-experts", action=argparse.BooleanOptionalAction, default=None,
                   help="pack bfloat16 experts for oneDNN (default: wherever it applies)")
    g.add_argument("--expert-kernel", choices=EXPERT_KERNELS,
                   help="native: the AVX-512 BF16 grouped kernel (built with the system C++ compiler on first use); "
                        "torch: torch's kernels; auto (default): native wherever it applies and builds")


def _add_recognizers(p: argparse.ArgumentParser) -> None:
    from ..recognizers import RECOGNIZERS
    g = p.add_argument_group("site-specific detection (privacy_patterns, after the model)")
    g.add_argument("--recognizers", metavar="NAMES",
                   help=f"comma-separated shipped recognizers: {', '.join(RECOGNIZERS)}")
    g.add_argument("--patterns", metavar="FILE", help="JSONL patterns: span_ruler's format, or {label, regex}")
    g.add_argument("--deny", metavar="FILE", help="JSONL deny list: {term, label[, ignore_case]} per line")
    g.add_argument("--allow", metavar="FILE",
                   help="allow list: one term per line, or JSONL {term} / {regex} (detected text never redacted)")


def _add_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="text file, folder, .jsonl file, or - for stdin")
    g = p.add_argument_group("input")
    g.add_argument("--format", choices=FORMATS, default="auto",
                   help="auto: .jsonl/.ndjson files are JSONL, others (and stdin) are whole texts; lines: one "
                        "document per line")
    g.add_argument("--text-key", action="append", metavar="KEY",
                   help="field holding text (default: text); repeat for several fields; note.body reads into "
                        "nested objects; a field may hold a string or a list of strings")
    g.add_argument("--on-missing", choices=get_args(OnMissing), default="error",
                   help="a text field missing, null or not a string: error (the record fails, see --on-error) or "
                        "skip (the field is written out as it is) (default: %(default)s)")
    g.add_argument("--on-error", choices=get_args(OnError), default="row",
                   help="a record that cannot be read or scrubbed: row (reported by file, line/row and field, left "
                        "out of the output, exit code 1) or job (the run stops) (default: %(default)s)")
    g.add_argument("--glob", default="*", help="file-name pattern inside folders (default: all files)")
    g.add_argument("--encoding", type=encoding_name, default="utf-8", help="input encoding (default: %(default)s)")
    g.add_argument("--resume", action="store_true", help="continue an interrupted run into the same -o")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="spacy-privfilter", formatter_class=fmt, epilog=MAIN_EPILOG,
                                     description="Find and scrub personal data (PII/PHI) with the OpenAI Privacy "
                                                 "Filter model family in spaCy.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_common(parser, "_top")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("redact", help="write redacted copies of files, folders, JSONL or stdin",
                       formatter_class=fmt, epilog=REDACT_EPILOG)
    _add_inputs(p)
    p.add_argument("-o", "--output", help="output file or folder (default: stdout)")
    g = p.add_argument_group("redaction")
    g.add_argument("--style", choices=STYLES, help="replacement style (default: tag)")
    g.add_argument("--label-style", action="append", default=[], metavar="LABEL=STYLE",
                   help="style for one label (repeatable)")
    g.add_argument("--tag-format", help="tag style format, fields {label} {LABEL} {n} (default: '[{LABEL}]')")
    g.add_argument("--mask-char", help="mask style character (default: *)")
    g.add_argument("--keep-last", type=int, help="mask style: letters/digits left visible at the end")
    g.add_argument("--hash-key-env", metavar="VAR",
                   help="environment variable holding the hash style key (default: PRIVFILTER_HASH_KEY)")
    g.add_argument("--hash-length", type=int, help="hash style: hex characters kept (8-64, default: 16)")
    g.add_argument("--locale", help="surrogate style Faker locale (default: en_US)")
    g.add_argument("--seed", help="surrogate style seed: same value, same surrogate across documents (a string: "
                                  "'007' and '7' differ); prefer --seed-env, as a command line is visible to others")
    g.add_argument("--seed-env", metavar="VAR",
                   help="environment variable holding the surrogate seed (default: PRIVFILTER_SURROGATE_SEED)")
    g.add_argument("--with-redactions", action="store_true",
                   help="JSONL and tables: add a 'redactions' key/column with offsets, labels and replacements")
    g.add_argument("--keep-mapping", action="store_true",
                   help="with --with-redactions: also record each original value, so that "
                        "spacy_privfilter.restore can undo the redaction (the output then contains the personal data)")
    g = p.add_argument_group("engine (scale out over tables: JSONL, CSV, Parquet)")
    g.add_argument("--engine", choices=ENGINES, default="local",
                   help="local: this process; spark, ray, dask: a local engine of --workers workers, one model "
                        "each (Ray joins $RAY_ADDRESS, Dask $DASK_SCHEDULER_ADDRESS when set) (default: local)")
    g.add_argument("--workers", type=int, default=1, help="engine workers (default: %(default)s)")
    _add_model(p)
    _add_recognizers(p)
    _add_common(p)

    p = sub.add_parser("detect", help="write detected spans (labels, offsets, scores) as JSONL",
                       formatter_class=fmt, epilog=DETECT_EPILOG)
    _add_inputs(p)
    p.add_argument("-o", "--output", help="output JSONL file (default: stdout)")
    p.add_argument("--with-text", action="store_true", help="also write the text of each span and document")
    _add_model(p)
    _add_recognizers(p)
    _add_common(p)

    p = sub.add_parser("evaluate", help="score the model (or precomputed spans) against labelled JSONL",
                       formatter_class=fmt, epilog=EVALUATE_EPILOG)
    p.add_argument("data", nargs="+", metavar="DATA.jsonl", help="labelled JSONL file(s)")
    p.add_argument("--predictions", metavar="PRED.jsonl", help="precomputed spans (detect output); no model run")
    p.add_argument("--ignore-unannotated-labels", action="store_true",
                   help="ignore predicted labels that a source never annotates (not false positives)")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    p.add_argument("--text-key", default="text", help="JSONL key holding the text (default: %(default)s)")
    p.add_argument("--spans-key", default="spans", help="JSONL key holding the spans (default: %(default)s)")
    _add_model(p)
    _add_recognizers(p)
    _add_common(p)

    p = sub.add_parser("convert", help="convert a checkpoint to MLX bf16 or 8-bit", formatter_class=fmt,
                       epilog="example:\n  spacy-privfilter convert OpenMed/privacy-filter-nemotron ./pf-mlx8 "
                              "--to mlx-8bit")
    p.add_argument("src", help="Hub repo id or local checkpoint folder")
    p.add_argument("dst", help="output folder")
    p.add_argument("--to", required=True, choices=CONVERT_FORMATS, help="target format")
    p.add_argument("--revision", help="Hub revision of SRC")
    _add_common(p)

    p = sub.add_parser("download", help="fetch a model into the Hugging Face cache for offline use",
                       formatter_class=fmt,
                       epilog="example:\n  spacy-privfilter download OpenMed/privacy-filter-nemotron\n"
                              "  HF_HUB_OFFLINE=1 spacy-privfilter redact notes/ -o out/ "
                              "--model OpenMed/privacy-filter-nemotron")
    p.add_argument("model", help="Hub repo id")
    p.add_argument("--revision", help="branch, tag or commit")
    p.add_argument("--cache-dir", help="cache folder (default: the Hugging Face cache)")
    _add_common(p)

    p = sub.add_parser("info", help="versions, backends, devices and cache locations", formatter_class=fmt)
    p.add_argument("--json", action="store_true", help="print as JSON")
    _add_common(p)

    from .adapt import add_commands  # calibrate, train
    add_commands(sub, _add_common)
    return parser


def setup_logging(quiet: int, verbose: int) -> Callable[[], None]:
    """Route the package's log records and Python warnings to stderr; returns a function that undoes it.

    main() may run inside a host process (tests, notebooks), whose logging must be left as it was found.
    """
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("spacy-privfilter: %(levelname)s: %(message)s"
                                           if verbose else "spacy-privfilter: %(message)s"))
    package, warn_logger = logging.getLogger("spacy_privfilter"), logging.getLogger("py.warnings")
    saved = [(lg, lg.handlers[:], lg.level, lg.propagate) for lg in (package, warn_logger)]
    package.handlers[:] = [handler]
    package.setLevel(level)
    package.propagate = False
    warn_logger.handlers[:] = [handler]
    warn_logger.setLevel(logging.ERROR if quiet else logging.WARNING)
    warn_logger.propagate = False
    logging.captureWarnings(True)

    def restore() -> None:
        logging.captureWarnings(False)
        for logger, handlers, lvl, propagate in saved:
            logger.handlers[:] = handlers
            logger.setLevel(lvl)
            logger.propagate = propagate

    return restore


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script exits with it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.quiet += args.__dict__.pop("quiet_top")
    args.verbose += args.__dict__.pop("verbose_top")
    if args.command in ("redact", "detect") and args.text_key is None:  # an append action's default is appended to
        args.text_key = ["text"]
    restore_logging = setup_logging(args.quiet, args.verbose)
    try:
        return _dispatch(args)
    finally:
        restore_logging()


def _dispatch(args: argparse.Namespace) -> int:
    log = logging.getLogger("spacy_privfilter.cli")
    try:
        if args.command in ("redact", "detect"):
            from .scrub import run_detect, run_redact
            return (run_redact if args.command == "redact" else run_detect)(args)
        from . import adapt
        if args.command in adapt.COMMANDS:
            return getattr(adapt, f"run_{args.command}")(args)
        from . import tools as cli_tools
        return getattr(cli_tools, f"run_{args.command}")(args)
    except UsageError as exc:
        print(f"spacy-privfilter {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:
        log.error("%s%s", exc, option_hint(str(exc), args))
        return EXIT_USAGE
    except PrivFilterError as exc:
        log.error("%s", exc)
        return EXIT_INPUT
    except KeyboardInterrupt:
        log.error("interrupted; finished work is kept (rerun with --resume to continue)")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, and keep Python's exit-time flush from failing.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # a bug or an unexpected runtime failure
        # Third-party messages may quote their input, so only the type is shown unless -vv asks for the traceback.
        if args.verbose >= 2:
            log.exception("unexpected error")
        else:
            log.error("unexpected %s; finished work is kept. Rerun with -vv for the traceback",
                      type(exc).__name__)
        return EXIT_INPUT
