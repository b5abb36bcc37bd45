"""One-liners: ``redact()`` detects and redacts with a cached ``privacy_filter`` pipeline.

spaCy (and the model runtime) load on the first call, never at ``import spacy_privfilter``.
"""
from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any, Iterable, Union, overload

from .backends.base import Backend
from .detector import DEFAULT_MODEL
from .redaction.values import Style

log = logging.getLogger("spacy_privfilter")

if TYPE_CHECKING:
    from spacy.language import Language

PIPELINE_CACHE_SIZE = 4  # model pipelines kept loaded across calls (each holds a model's weights)


@overload
def redact(text_or_texts: str, *, model: str = ..., style: Style = ..., nlp: "Language | None" = ...,
           spans_key: str = ..., backend: Backend = ..., device: str = ..., batch_size: int = ...,
           hash_key: str | None = ..., seed: int | str | None = ..., **options: Any) -> str: ...


@overload
def redact(text_or_texts: Iterable[str], *, model: str = ..., style: Style = ...,
           nlp: "Language | None" = ..., spans_key: str = ..., backend: Backend = ..., device: str = ...,
           batch_size: int = ..., hash_key: str | None = ..., seed: int | str | None = ...,
           **options: Any) -> list[str]: ...


def redact(text_or_texts: Union[str, Iterable[str]], *, model: str = DEFAULT_MODEL, style: Style = "tag",
           nlp: "Language | None" = None, spans_key: str = "pii", backend: Backend = "auto",
           device: str = "auto", batch_size: int = 32, hash_key: str | None = None,
           seed: int | str | None = None, **options: Any) -> Union[str, list[str]]:
    """Detect and redact in one call: a string gives a string, an iterable of strings gives a list.

    Without ``nlp`` a pipeline ``spacy.blank("xx") + privacy_filter(model, backend, device)`` is built on first
    use and reused by later calls with the same model settings (the default model is fetched from the Hugging
    Face Hub once, then read from the cache). With ``nlp``, that pipeline detects (it must write
    ``doc.spans[spans_key]``, e.g. through ``privacy_filter``). The redaction itself is done here with
    ``style``, the secrets ``hash_key`` / ``seed`` (used for this call only, never kept or cached) and
    ``options`` (any other ``privacy_redactor`` setting: label_styles, tag_format, keep_last, ...).
    An input that ``nlp``'s error handler skipped gives None in its place, so results stay aligned with inputs.
    """
    from .pipeline.privacy_redactor import PrivacyRedactor

    single = isinstance(text_or_texts, str)
    texts = _checked_texts(text_or_texts)
    # Built per call (cheap once Faker is imported), so a key or seed never outlives the call that gave it.
    redactor = PrivacyRedactor(None, style=style, spans_key=spans_key, hash_key=hash_key, seed=seed, **options)
    if nlp is None:
        nlp = _pipeline(str(model), backend, device, spans_key)
    # Results are placed by input index: a non-raising error handler (nlp.set_error_handler) drops failed docs
    # from nlp.pipe, and a dropped input gives None (never its unredacted text) instead of shifting every later
    # result onto the wrong input.
    out: list[str | None] = [None] * len(texts)
    for doc, index in nlp.pipe(zip(texts, range(len(texts))), as_tuples=True, batch_size=batch_size):
        out[index] = redactor(doc)._.redacted_text
    failed = out.count(None)
    if failed:
        log.warning("redact(): %d of %d input(s) failed in the pipeline and give None", failed, len(texts))
    return out[0] if single else out  # type: ignore[return-value]


@functools.lru_cache(maxsize=PIPELINE_CACHE_SIZE)
def _pipeline(model: str, backend: str, device: str, spans_key: str) -> "Language":
    """A ``privacy_filter`` pipeline per model setting; holds no secret (redaction happens outside it)."""
    from .pipeline.build import blank_pipeline

    return blank_pipeline("xx", filter_config={"model": model, "backend": backend, "device": device,
                                               "spans_key": spans_key})


def _checked_texts(text_or_texts: Any) -> list[str]:
    if isinstance(text_or_texts, str):
        texts = [text_or_texts]
    elif isinstance(text_or_texts, Iterable):
        texts = list(text_or_texts)
    else:
        raise TypeError(f"redact() takes a string or an iterable of strings; got {type(text_or_texts).__name__}")
    bad = [i for i, text in enumerate(texts) if not isinstance(text, str)]
    if bad:
        raise TypeError(f"redact() needs strings; items {bad[:10]} are not")
    bad = [i for i, text in enumerate(texts) if not _encodable(text)]
    if bad:  # spaCy's string store would fail deep inside its tokenizer with a message quoting the character
        raise ValueError(f"redact(): items {bad[:10]} contain lone surrogates (U+D800-U+DFFF), which are not "
                         f"valid Unicode and which spaCy cannot tokenize; read the text with errors='replace'")
    return texts


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
