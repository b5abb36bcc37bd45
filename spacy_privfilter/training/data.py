"""Labelled documents for calibration and fine-tuning: JSONL spans or spaCy ``DocBin`` files.

JSONL lines hold ``{"text": ..., "spans": [{"start", "end", "label"}], "source": ...}`` (the format of the
project's evaluation data); ``.spacy`` files are DocBins whose ``doc.spans[spans_key]`` (or ``doc.ents`` when
that group is absent) hold the gold spans. Errors name the file, line (or doc number) and field, never text.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable, Mapping, NamedTuple, Sequence

from ..errors import ConfigError, PrivFilterError
from ..jsonl import read_records

DOCBIN_SUFFIX = ".spacy"


class DataError(PrivFilterError, ValueError):
    """A labelled data file is unusable; the message names the file and line (or doc) and the field."""


class GoldSpan(NamedTuple):
    """A labelled span: ``text[start:end]`` is PII of class ``label`` (code-point offsets, end exclusive)."""

    start: int
    end: int
    label: str


class LabelledDoc(NamedTuple):
    """One labelled document; ``source`` is the data set it came from (for partially annotated data)."""

    text: str
    spans: tuple[GoldSpan, ...]
    source: str = ""


def load_examples(paths: str | Path | Iterable[str | Path], *, text_key: str = "text", spans_key: str = "spans",
                  label_map: Mapping[str, str] | None = None) -> list[LabelledDoc]:
    """Read labelled documents from JSONL (``.jsonl``/``.ndjson``) and DocBin (``.spacy``) files, in order.

    Args:
        paths: one path or several.
        text_key, spans_key: JSONL keys of the text and the span list; ``spans_key`` is also the DocBin
            ``doc.spans`` group (``doc.ents`` is used when a doc lacks it).
        label_map: renames data labels to model classes (e.g. ``{"NAME": "private_person"}``).
    Raises:
        DataError: a file is missing or unreadable, a line is not a JSON object, or a span is malformed.
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    label_map = dict(label_map or {})
    docs: list[LabelledDoc] = []
    for path in map(Path, paths):
        if not path.is_file():
            raise DataError(f"no such data file: {path}")
        rows = _docbin_rows(path, spans_key) if path.suffix == DOCBIN_SUFFIX else _jsonl_rows(path, text_key,
                                                                                             spans_key)
        for where, text, raw_spans, source in rows:
            spans = tuple(_gold_span(text, span, f"{where}: {spans_key}[{i}]", label_map)
                          for i, span in enumerate(raw_spans))
            docs.append(LabelledDoc(text, tuple(sorted(spans)), source or str(path)))
    return docs


def _jsonl_rows(path: Path, text_key: str, spans_key: str):
    for number, record in read_records(path, error=DataError):
        where = f"{path}:{number}"
        text, spans = record.get(text_key), record.get(spans_key)
        if not isinstance(text, str):
            raise DataError(f"{where}: field {text_key!r} must be a string")
        if not isinstance(spans, list):
            raise DataError(f"{where}: field {spans_key!r} must be a list of spans")
        yield where, text, spans, str(record.get("source") or "")


def _docbin_rows(path: Path, spans_key: str):
    from ..pipeline.docbin import read_docbin

    for number, (text, spans) in enumerate(read_docbin(path, spans_key=spans_key), 1):
        yield f"{path}: doc {number}", text, spans, ""


def _gold_span(text: str, span: object, where: str, label_map: Mapping[str, str]) -> GoldSpan:
    if not isinstance(span, Mapping):
        raise DataError(f"{where}: a span must be an object with 'start', 'end' and 'label'")
    start, end, label = span.get("start"), span.get("end"), span.get("label")
    if isinstance(start, bool) or isinstance(end, bool) or not isinstance(start, int) or not isinstance(end, int):
        raise DataError(f"{where}: 'start' and 'end' must be integers")
    if not isinstance(label, str) or not label:
        raise DataError(f"{where}: 'label' must be a non-empty string")
    if not 0 <= start < end <= len(text):
        raise DataError(f"{where}: span {start}:{end} is empty or outside the text (length {len(text)})")
    return GoldSpan(start, end, label_map.get(label, label))


def split_examples(docs: Sequence[LabelledDoc], dev_fraction: float, *,
                   salt: str = "dev") -> tuple[list[LabelledDoc], list[LabelledDoc]]:
    """Deterministic (fit, held-out) split by the sha256 of ``salt`` and each text: the same text always lands on
    the same side, whatever the order or the other documents, so duplicates never straddle the split. A part
    split again needs another ``salt`` (the same one would put every document on the same side)."""
    if isinstance(dev_fraction, bool) or not isinstance(dev_fraction, (int, float)) or not 0 <= dev_fraction < 1:
        raise ConfigError(f"dev_fraction must be a number in [0, 1); got {dev_fraction!r}")
    fit: list[LabelledDoc] = []
    held: list[LabelledDoc] = []
    for doc in docs:
        digest = hashlib.sha256(f"{salt}\0{doc.text}".encode("utf-8", "surrogatepass")).digest()
        (held if int.from_bytes(digest[:8], "big") / 2.0 ** 64 < dev_fraction else fit).append(doc)
    return fit, held


def data_classes(docs: Iterable[LabelledDoc]) -> list[str]:
    """Span labels of ``docs`` in first-seen order."""
    return list(dict.fromkeys(span.label for doc in docs for span in doc.spans))


def check_classes(docs: Sequence[LabelledDoc], classes: Sequence[str], *, allow_new: bool = False) -> list[str]:
    """The data's labels the model lacks; an error unless ``allow_new`` (label-set extension)."""
    new = [label for label in data_classes(docs) if label not in classes]
    if new and not allow_new:
        raise ConfigError(f"the data has labels the model lacks: {', '.join(new)}. Fix: map them to model classes "
                          f"(label_map / --label-map DATA=MODEL) or add them as new classes (extend_labels / "
                          f"--extend-labels). Model classes: {', '.join(classes)}")
    return new
