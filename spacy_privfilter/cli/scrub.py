"""``redact`` and ``detect``: build the spaCy pipeline, plan the outputs, stream the inputs through it."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from .inputs import Item, Source, UsageError, count_positions, discover, iter_items
from .outputs import Outputs, Progress, json_line, progress_path
from .stream import RunStats, progress_bar, run, summary
from ..backends.base import RUNTIME_OPTIONS

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
    runtime_options = {key: getattr(args, key) for key in RUNTIME_OPTIONS["torch"] if getattr(args, key) is not None}
    if runtime_options:
        config["runtime_options"] = runtime_options
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
    from ..pipeline.build import blank_pipeline

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1; got {args.batch_size}")
    nlp = blank_pipeline(args.lang, filter_config=filter_config(args))
    component = nlp.get_pipe("privacy_filter")
    add_patterns_pipe(nlp, args)
    if redact:
        nlp.add_pipe("privacy_redactor", config=redactor_config(args))
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


def doc_spans(doc: Any, spans_key: str, *, with_sources: bool = False) -> list[dict[str, Any]]:
    """The spans the pipeline put in ``doc.spans[spans_key]`` as ``{start, end, label, score}`` dicts.

    Offsets are the character offsets of the token-aligned spaCy spans (what the Python API exposes and
    what the redactor hides), see ``--alignment-mode``. ``with_sources`` adds each span's ``source``
    (``model``, ``pattern:<id>``, ``deny``, ``external``).
    """
    from ..pipeline.span_groups import span_scores, span_sources

    if spans_key not in doc.spans:
        return []
    group = doc.spans[spans_key]
    spans = [{"start": span.start_char, "end": span.end_char, "label": span.label_,
              "score": None if score is None else round(score, 6)}
             for span, score in zip(group, span_scores(group, fill=None))]
    if with_sources:
        for span, source in zip(spans, span_sources(group)):
            span["source"] = source
    return spans


def spans_key_of(nlp: Any) -> str:
    return str(nlp.get_pipe_config("privacy_filter").get("spans_key") or "pii")


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
    sources = discover(args.inputs, fmt=args.format, glob=args.glob)
    target, as_dir = plan_outputs(args, sources, single_stream=not redact)
    if redact and not as_dir and target is None and len(sources) != 1:
        raise UsageError("a folder or several inputs need -o FOLDER")
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
    if not sources:
        log.warning("no input files found (folder empty, or nothing matches --glob %r)", args.glob)
    nlp = build_nlp(args, redact=redact)
    outputs = Outputs(target, as_dir=as_dir, sizes=sizes)
    write = _redact_writer(args, outputs) if redact else \
        _detect_writer(args, outputs, spans_key_of(nlp), with_sources="privacy_patterns" in nlp.pipe_names)
    items = iter_items(sources, text_key=args.text_key, encoding=args.encoding, skip=done)
    show_bar = not args.quiet and sys.stderr.isatty()
    bar = progress_bar(total=count_positions(sources), enabled=show_bar, initial=done)
    stats = RunStats()
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


def _redact_writer(args: argparse.Namespace, outputs: Outputs) -> Any:
    def write(item: Item, doc: Any) -> int:
        redactions = list(doc._.redactions or [])
        if item.record is not None:
            record = dict(item.record)
            record[args.text_key] = doc._.redacted_text
            if args.with_redactions:
                record["redactions"] = [dict(r) for r in redactions]
            outputs.write_line(item, json_line(record))
        elif item.line is not None:
            outputs.write_line(item, doc._.redacted_text.replace("\n", " ") + "\n")
        else:
            outputs.write_document(item, doc._.redacted_text)
        return len(redactions)
    return write


def _detect_writer(args: argparse.Namespace, outputs: Outputs, spans_key: str, *, with_sources: bool) -> Any:
    def write(item: Item, doc: Any) -> int:
        spans = doc_spans(doc, spans_key, with_sources=with_sources)
        if args.with_text:
            for span in spans:
                span["text"] = doc.text[span["start"]:span["end"]]
        if item.record is not None:
            record = {k: v for k, v in item.record.items() if k != args.text_key or args.with_text}
        else:
            record = {"file": item.source.display}
            if item.line is not None:
                record["line"] = item.line
            if args.with_text:
                record["text"] = doc.text
        record["spans"] = spans
        outputs.write_line(item, json_line(record))
        return len(spans)
    return write


def run_redact(args: argparse.Namespace) -> int:
    return _execute(args, command="redact", redact=True)


def run_detect(args: argparse.Namespace) -> int:
    return _execute(args, command="detect", redact=False)
