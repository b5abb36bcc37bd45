"""``redact`` and ``detect``: build the spaCy pipeline, plan the outputs, stream the inputs through it."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator

from .inputs import (TABLE_KINDS, Item, Source, StdinDigest, UsageError, count_positions, discover,
                     input_identity, iter_items)
from .outputs import Outputs, Progress, json_line, progress_path
from .stream import RunStats, progress_bar, run, summary
from .tables import RowError, engine_spec, run_tables
from ..scale.core import doc_spans, spans_key_of
from ..scale.engines import start_engine
from ..scale.fields import by_key, drop, parse_keys, scrubbed_record
from ..backends.base import RUNTIME_OPTIONS

log = logging.getLogger("spacy_privfilter.cli")
EXIT_OK, EXIT_INPUT = 0, 1
NOT_FINGERPRINTED = ("resume", "quiet", "verbose", "batch_size", "max_batch_tokens", "device", "output", "seed")


def parse_pairs(pairs: list[str], option: str, convert: Any = str) -> dict[str, Any]:
    """``["email=hash", ...]`` -> ``{"email": "hash"}``; a malformed pair is a usage error."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UsageError(f"{option} expects LABEL=VALUE; got {pair!r}")
        try:
            out[key.strip()] = convert(value.strip())
        except ValueError as exc:
            raise UsageError(f"{option} {key.strip()}: invalid value {value.strip()!r}") from exc
    return out


def filter_config(args: argparse.Namespace) -> dict[str, Any]:
    """``privacy_filter`` config from the model options; unset options keep the factory defaults."""
    config: dict[str, Any] = {"model": args.model, "backend": args.backend, "device": args.device,
                              "dtype": args.dtype}
    if args.revision:
        config["revision"] = args.revision
    if args.threshold is not None:
        config["threshold"] = args.threshold
    if args.label_threshold:
        config["label_thresholds"] = parse_pairs(args.label_threshold, "--label-threshold", float)
    if args.labels:
        config["labels"] = [label.strip() for label in args.labels.split(",") if label.strip()]
    if args.max_batch_tokens is not None:
        config["max_batch_tokens"] = args.max_batch_tokens
    if args.alignment_mode is not None:
        config["alignment_mode"] = args.alignment_mode
    runtime_options = {key: getattr(args, key) for key in RUNTIME_OPTIONS["torch"] if getattr(args, key) is not None}
    if runtime_options:
        config["runtime_options"] = runtime_options
    return config


def redactor_config(args: argparse.Namespace) -> dict[str, Any]:
    """``privacy_redactor`` config from the redaction options; unset options keep the factory defaults."""
    config: dict[str, Any] = {}
    for option in ("style", "tag_format", "mask_char", "keep_last", "hash_key_env", "hash_length", "locale",
                   "seed_env"):
        if getattr(args, option) is not None:
            config[option] = getattr(args, option)
    if args.label_style:
        config["label_styles"] = parse_pairs(args.label_style, "--label-style")
    if args.keep_mapping:
        config["keep_mapping"] = True
    # --seed is a secret, so it never enters the config (config.cfg, error messages): see build_nlp. It is kept
    # as the string typed, so "007" and "7" are different seeds.
    return config


def build_nlp(args: argparse.Namespace, *, redact: bool, detector: Any = None) -> Any:
    """A blank spaCy pipeline with ``privacy_filter`` (and ``privacy_redactor``), weights loaded up front.

    ``detector``: an already loaded model to reuse (when the pipeline is renewed), instead of loading it.
    """
    from ..pipeline.build import blank_pipeline, has_language

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1; got {args.batch_size}")
    if not has_language(args.lang):
        raise UsageError(f"--lang {args.lang!r} is not a spaCy language code; e.g. xx (any language), en, de, "
                         f"fr, es")
    nlp = blank_pipeline(args.lang, filter_config=filter_config(args))
    component = nlp.get_pipe("privacy_filter")
    add_patterns_pipe(nlp, args)
    if redact:
        redactor = nlp.add_pipe("privacy_redactor", config=redactor_config(args))
        if args.seed is not None:
            redactor.use_secrets(seed=args.seed)
    if detector is not None:
        component.detector = detector
        return nlp
    log.info("loading model %s (backend %s, device %s)", args.model, args.backend, args.device)
    # Load now, so a bad model fails before any output is written rather than inside the first batch.
    component.initialize(nlp=nlp)
    return nlp


def wants_patterns(args: argparse.Namespace) -> bool:
    return bool(args.recognizers or args.patterns or args.deny or args.allow)


def add_patterns_pipe(nlp: Any, args: argparse.Namespace) -> Any:
    """Add ``privacy_patterns`` from --recognizers/--patterns/--deny/--allow; None when none is given."""
    from ..recognizers import RECOGNIZERS, read_lines

    if not wants_patterns(args):
        return None
    names = [name.strip() for name in (args.recognizers or "").split(",") if name.strip()]
    unknown = [name for name in names if name not in RECOGNIZERS]
    if unknown:
        raise UsageError(f"--recognizers: unknown name(s) {', '.join(unknown)}; choose from {', '.join(RECOGNIZERS)}")
    component = nlp.add_pipe("privacy_patterns", config={"recognizers": names})
    for kind in ("patterns", "deny", "allow"):
        path = getattr(args, kind)
        if path:
            getattr(component, f"add_{kind}")(read_lines(path, kind))
    return component


def renewer(args: argparse.Namespace, nlp: Any, *, redact: bool) -> Any:
    """A function that builds a fresh pipeline sharing ``nlp``'s loaded model (see ``stream.VOCAB_RENEW_LIMIT``)."""
    detector = nlp.get_pipe("privacy_filter").detector
    return lambda: build_nlp(args, redact=redact, detector=detector)


def plan_outputs(args: argparse.Namespace, sources: list[Source], *, single_stream: bool) -> tuple[Path | None, bool]:
    """Decide where results go: ``(target, as_dir)``; target None is stdout."""
    to_stdout = args.output in (None, "-")
    folder_input = any(Path(arg).is_dir() for arg in args.inputs if arg != "-")
    if to_stdout:
        if args.resume:
            raise UsageError("--resume needs -o: output written to stdout cannot be resumed")
        if not single_stream and (folder_input or len(args.inputs) > 1):
            raise UsageError("a folder or several inputs need -o FOLDER (the tree is mirrored there)")
        return None, False
    target = Path(args.output)
    if single_stream and target.is_dir():
        raise UsageError(f"-o {target} is a folder; this command writes one JSONL file (e.g. -o spans.jsonl)")
    as_dir = not single_stream and (folder_input or len(args.inputs) > 1 or target.is_dir())
    if as_dir:
        if target.exists() and not target.is_dir():
            raise UsageError(f"-o {target} must be a folder for a folder or several inputs")
        dests = [s.dest for s in sources]
        dupes = sorted({d for d in dests if dests.count(d) > 1})
        if dupes:
            raise UsageError(f"several inputs would write the same output file(s): {', '.join(dupes[:5])}")
    check_no_overlap(target, args.inputs, sources)
    return target, as_dir


def check_no_overlap(target: Path, inputs: list[str], sources: list[Source]) -> None:
    """Refuse an output that is, contains or lies inside an input (symlinks resolved), file or folder.

    A writer that reaches an input truncates it while it is still being read, or overwrites it later.
    """
    out = target.resolve()
    paths = [(arg, Path(arg).resolve()) for arg in inputs if arg != "-"]
    paths += [(s.display, s.path.resolve()) for s in sources if s.path is not None]
    for shown, path in paths:
        if out == path:
            raise UsageError(f"-o {target} is also an input ({shown}); choose another output")
        if path in out.parents:
            raise UsageError(f"-o {target} is inside the input folder {shown}; choose another output")
        if out in path.parents:
            raise UsageError(f"-o {target} contains the input {shown}; choose another output")


def _execute(args: argparse.Namespace, *, command: str, redact: bool) -> int:
    try:
        parse_keys(args.text_key)
    except ValueError as exc:
        raise UsageError(f"--text-key: {exc}") from exc
    sources = discover(args.inputs, fmt=args.format, glob=args.glob)
    target, as_dir = plan_outputs(args, sources, single_stream=not redact)
    if redact and not as_dir and target is None and len(sources) != 1:
        raise UsageError("a folder or several inputs need -o FOLDER")
    table_sources = split_table_sources(args, sources, redact=redact)
    sources = [s for s in sources if s not in table_sources]  # the rest is streamed, as before
    # Everything that shapes the output: resuming with other inputs or options would mix two runs in one file.
    fingerprint = {key: value for key, value in sorted(vars(args).items()) if key not in NOT_FINGERPRINTED}
    fingerprint["seed"] = getattr(args, "seed", None) is not None  # whether one was given, never its value
    fingerprint["inputs"] = [str(Path(a).resolve()) if a != "-" else "-" for a in args.inputs]
    stdin_digest = StdinDigest()
    progress = Progress(progress_path(target, as_dir) if target is not None else None, fingerprint,
                        identity=input_identity(sources), stdin_digest=stdin_digest)
    done, sizes = 0, {}
    if args.resume:
        state = progress.load()
        if state is None and target is not None and target.exists():
            check_unchanged_since(target, sources)
            log.warning("nothing to resume: %s has no progress file (its run finished)", target)
            return EXIT_OK
        if state is not None:
            done, sizes = state["done"], state["sizes"]
            stdin_digest.expected = state["stdin_sha256"]
            log.info("resuming after %d input position(s)", done)
    if not sources and not table_sources:
        log.warning("no input files found (folder empty, or nothing matches --glob %r)", args.glob)
    stats = RunStats()
    if table_sources:
        engine = start_engine(getattr(args, "engine", "local"), getattr(args, "workers", 1))
        try:
            spec = engine_spec(args, filter_config(args), redactor_config(args))
            run_tables(args, table_sources, target, as_dir, engine, spec, stats)
        finally:
            engine.close()
        if not sources:
            progress.remove()
            if not args.quiet:
                print(summary("redacted", stats), file=sys.stderr)
            return EXIT_INPUT if stats.errors else EXIT_OK
    nlp = build_nlp(args, redact=redact)
    outputs = Outputs(target, as_dir=as_dir, sizes=sizes)
    write = _redact_writer(args, outputs) if redact else \
        _detect_writer(args, outputs, spans_key_of(nlp), with_sources="privacy_patterns" in nlp.pipe_names)
    # A text file over 4 bytes per character allowed cannot fit nlp.max_length: refuse it before reading it.
    items = iter_items(sources, text_key=args.text_key, encoding=args.encoding, skip=done, stdin_digest=stdin_digest,
                       max_bytes=4 * nlp.max_length if getattr(nlp, "max_length", 0) else None,
                       on_missing=args.on_missing)
    if args.on_error == "job":
        items = stop_at_error(items)
    show_bar = not args.quiet and sys.stderr.isatty()
    bar = progress_bar(total=count_positions(sources), enabled=show_bar, initial=done)
    try:
        run(nlp, items, outputs, progress, write=write, batch_size=args.batch_size, done=done, bar=bar, stats=stats,
            renew=renewer(args, nlp, redact=redact))
        outputs.finish_empty(sources)
    finally:
        if bar is not None:
            bar.close()
        outputs.close()
    progress.remove()
    if not args.quiet:
        print(summary("redacted" if redact else "scanned", stats), file=sys.stderr)
    return EXIT_INPUT if stats.errors else EXIT_OK


def check_unchanged_since(target: Path, sources: list[Source]) -> None:
    """A finished run keeps no progress file; refuse a resume when an input is newer than its output.

    An input appended to, edited or added after the run would otherwise never be processed.
    """
    files = [p for p in target.rglob("*") if p.is_file()] if target.is_dir() else [target]
    written = max((p.stat().st_mtime_ns for p in files), default=0)
    for source in sources:
        if source.path is None:
            raise UsageError("nothing to resume, and stdin cannot be compared with a finished run's output; "
                             "run without --resume")
        try:
            newer = source.path.stat().st_mtime_ns > written
        except OSError:
            continue
        if newer:
            raise UsageError(f"cannot resume: input {source.display} changed after {target} was written (its run "
                             f"had finished); run without --resume to redo it")


def split_table_sources(args: argparse.Namespace, sources: list[Source], *, redact: bool) -> list[Source]:
    """The sources that go through an engine as tables: CSV/Parquet always, every source with --engine."""
    engine = getattr(args, "engine", "local")
    if getattr(args, "workers", 1) < 1:
        raise UsageError(f"--workers must be at least 1; got {args.workers}")
    tables = [s for s in sources if s.kind in TABLE_KINDS or engine != "local"]
    if tables and not redact:
        raise UsageError("detect reads text and JSONL; scrub CSV/Parquet with redact (--with-redactions keeps the "
                         "offsets and labels)")
    unfit = [s.display for s in tables if s.path is None or s.kind not in ("jsonl", *TABLE_KINDS)]
    if unfit:
        raise UsageError(f"--engine {engine} reads JSONL, CSV and Parquet files (not stdin or text); got: "
                         f"{', '.join(unfit[:5])}")
    return tables


def stop_at_error(items: Iterable[Item]) -> Iterator[Item]:
    """``items``, raising at the first one that cannot be processed (``--on-error job``)."""
    for item in items:
        if item.error is not None:
            raise RowError(f"{item.error}; stopped (--on-error job)")
        yield item


def _redact_writer(args: argparse.Namespace, outputs: Outputs) -> Any:
    paths = parse_keys(args.text_key)

    def write(item: Item, docs: list[Any]) -> int:
        redactions = [[dict(r) for r in doc._.redactions or []] for doc in docs]
        if item.record is not None:
            outputs.write_line(item, json_line(scrubbed_record(
                item.record, paths, item.slots, [doc._.redacted_text for doc in docs],
                redactions if args.with_redactions else None)))
        elif item.line is not None:
            outputs.write_line(item, docs[0]._.redacted_text.replace("\n", " ") + "\n")
        else:
            outputs.write_document(item, docs[0]._.redacted_text)
        return sum(map(len, redactions))
    return write


def _detect_writer(args: argparse.Namespace, outputs: Outputs, spans_key: str, *, with_sources: bool) -> Any:
    paths = parse_keys(args.text_key)

    def write(item: Item, docs: list[Any]) -> int:
        spans = [doc_spans(doc, spans_key, with_sources=with_sources) for doc in docs]
        if args.with_text:
            for doc, doc_spans_ in zip(docs, spans):
                for span in doc_spans_:
                    span["text"] = doc.text[span["start"]:span["end"]]
        if item.record is not None:
            record = dict(item.record) if args.with_text else drop(item.record, paths)
            record["spans"] = by_key(paths, item.slots, spans)
        else:
            record = {"file": item.source.display}
            if item.line is not None:
                record["line"] = item.line
            if args.with_text:
                record["text"] = docs[0].text
            record["spans"] = spans[0]
        outputs.write_line(item, json_line(record))
        return sum(map(len, spans))
    return write


def run_redact(args: argparse.Namespace) -> int:
    return _execute(args, command="redact", redact=True)


def run_detect(args: argparse.Namespace) -> int:
    return _execute(args, command="detect", redact=False)
