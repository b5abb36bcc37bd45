"""``redact`` and ``detect``: build the spaCy pipeline, plan the outputs, stream the inputs through it."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator

from .inputs import TABLE_KINDS, Item, Source, UsageError, count_positions, discover, iter_items
from .outputs import Outputs, Progress, json_line, progress_path
from .stream import RunStats, progress_bar, run, summary
from .tables import RowError, engine_spec, run_tables
from ..scale.core import doc_spans, spans_key_of
from ..scale.engines import start_engine
from ..scale.fields import by_key, drop, parse_keys, scrubbed_record

log = logging.getLogger("spacy_privfilter.cli")
EXIT_OK, EXIT_INPUT = 0, 1
NOT_FINGERPRINTED = ("resume", "quiet", "verbose", "batch_size", "max_batch_tokens", "device", "output")


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
    return config


def redactor_config(args: argparse.Namespace) -> dict[str, Any]:
    """``privacy_redactor`` config from the redaction options; unset options keep the factory defaults."""
    config: dict[str, Any] = {}
    for option in ("style", "tag_format", "mask_char", "keep_last", "hash_key_env", "hash_length", "locale"):
        if getattr(args, option) is not None:
            config[option] = getattr(args, option)
    if args.label_style:
        config["label_styles"] = parse_pairs(args.label_style, "--label-style")
    if args.keep_mapping:
        config["keep_mapping"] = True
    if args.seed is not None:
        config["seed"] = int(args.seed) if args.seed.lstrip("-").isdigit() else args.seed
    return config


def build_nlp(args: argparse.Namespace, *, redact: bool, detector: Any = None) -> Any:
    """A blank spaCy pipeline with ``privacy_filter`` (and ``privacy_redactor``), weights loaded up front.

    ``detector``: an already loaded model to reuse (when the pipeline is renewed), instead of loading it.
    """
    import spacy

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1; got {args.batch_size}")
    nlp = spacy.blank(args.lang)
    component = nlp.add_pipe("privacy_filter", config=filter_config(args))
    if redact:
        nlp.add_pipe("privacy_redactor", config=redactor_config(args))
    if detector is not None:
        component.detector = detector
        return nlp
    log.info("loading model %s (backend %s, device %s)", args.model, args.backend, args.device)
    # Load now, so a bad model fails before any output is written rather than inside the first batch.
    component.initialize(nlp=nlp)
    return nlp


def renewer(args: argparse.Namespace, nlp: Any, *, redact: bool) -> Any:
    """A function that builds a fresh pipeline sharing ``nlp``'s loaded model (see ``cli_run.VOCAB_RENEW_LIMIT``)."""
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
        target_abs = target.resolve()
        for arg in args.inputs:
            if arg != "-" and Path(arg).is_dir() and Path(arg).resolve() in (target_abs, *target_abs.parents):
                raise UsageError(f"-o {target} is inside the input folder {arg}; choose another folder")
        dests = [s.dest for s in sources]
        dupes = sorted({d for d in dests if dests.count(d) > 1})
        if dupes:
            raise UsageError(f"several inputs would write the same output file(s): {', '.join(dupes[:5])}")
    elif any(s.path is not None and s.path.resolve() == target.resolve() for s in sources):
        raise UsageError(f"-o {target} is also an input")
    return target, as_dir


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
    fingerprint["inputs"] = [str(Path(a).resolve()) if a != "-" else "-" for a in args.inputs]
    progress = Progress(progress_path(target, as_dir) if target is not None else None, fingerprint)
    done, sizes = 0, {}
    if args.resume:
        state = progress.load()
        if state is None and target is not None and target.exists():
            log.warning("nothing to resume: %s has no progress file (its run finished)", target)
            return EXIT_OK
        if state is not None:
            done, sizes = state["done"], state["sizes"]
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
    write = _redact_writer(args, outputs) if redact else _detect_writer(args, outputs, spans_key_of(nlp))
    items = iter_items(sources, text_key=args.text_key, encoding=args.encoding, skip=done,
                       on_missing=args.on_missing)
    if args.on_error == "job":
        items = stop_at_error(items)
    show_bar = not args.quiet and sys.stderr.isatty()
    bar = progress_bar(total=count_positions(sources), enabled=show_bar, initial=done)
    try:
        run(nlp, items, outputs, progress, write=write, batch_size=args.batch_size, done=done, bar=bar, stats=stats,
            renew=renewer(args, nlp, redact=redact))
    finally:
        if bar is not None:
            bar.close()
        outputs.close()
    progress.remove()
    if not args.quiet:
        print(summary("redacted" if redact else "scanned", stats), file=sys.stderr)
    return EXIT_INPUT if stats.errors else EXIT_OK


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


def _detect_writer(args: argparse.Namespace, outputs: Outputs, spans_key: str) -> Any:
    paths = parse_keys(args.text_key)

    def write(item: Item, docs: list[Any]) -> int:
        spans = [doc_spans(doc, spans_key) for doc in docs]
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
