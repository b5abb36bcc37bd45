"""spaCy component ``privacy_redactor`` and the ``redact()`` one-liner.

Place the component after ``privacy_filter``; it reads ``doc.spans[spans_key]`` (scores from the group's
``attrs["scores"]`` decide overlaps) and writes, through ``doc.user_data``-backed extensions that survive
``DocBin`` and ``nlp.pipe(n_process=...)``:

- ``doc._.redacted_text``: the text with every span replaced;
- ``doc._.redactions``: one plain dict per replacement ``{start, end, label, replacement, redacted_start,
  redacted_end}`` (with ``keep_mapping`` also ``original``);
- ``doc._.redaction_mapping``: ``{replacement: original}`` with ``keep_mapping``, else None; a replacement that
  stands for several different originals maps to None (``restore`` refuses it; the records restore exactly).

Without ``keep_mapping`` no original value is written anywhere on the doc (the doc's own text and spans are of
course still there: store or send ``doc._.redacted_text``, not the doc). The pure logic lives in ``redact.py``.
"""
import dataclasses
import json
import logging
from typing import Any, Dict, Iterable, List, Literal, Optional, Union

from spacy.language import Language
from spacy.tokens import Doc

from ..detector import DEFAULT_MODEL
from ..errors import ConfigError
from ..redaction.redactor import DEFAULT_HASH_KEY_ENV, DEFAULT_TAG_FORMAT, RedactionConfig, Redactor, resolve_hash_key
from ..redaction.secrets import DEFAULT_SEED_ENV, refuse_secrets_in_config, resolve_seed
from ..spans import CharSpan

StyleName = Literal["tag", "mask", "hash", "surrogate", "remove"]
EXTENSIONS = ("redacted_text", "redactions", "redaction_mapping")

DEFAULT_CONFIG: Dict[str, Any] = {
    "spans_key": "pii",
    "style": "tag",
    "label_styles": {},
    "tag_format": DEFAULT_TAG_FORMAT,
    "mask_char": "*",
    "keep_last": 0,
    "hash_key": None,
    "hash_key_env": DEFAULT_HASH_KEY_ENV,
    "hash_length": 16,
    "locale": "en_US",
    "seed": None,
    "seed_env": DEFAULT_SEED_ENV,
    "keep_mapping": False,
}


_REDACTIONS_KEY = ("._.", "redactions", None, None)  # where a default-valued extension would keep it


def _get_redactions(doc: Doc) -> Optional[List[Dict[str, Any]]]:
    records = doc.user_data.get(_REDACTIONS_KEY)
    if isinstance(records, tuple):
        # msgpack (DocBin, nlp.pipe(n_process=...)) brings lists back as tuples; keep the documented list.
        records = doc.user_data[_REDACTIONS_KEY] = list(records)
    return records


def _set_redactions(doc: Doc, records: Optional[List[Dict[str, Any]]]) -> None:
    doc.user_data[_REDACTIONS_KEY] = records


def install_extensions() -> None:
    """Register the Doc extensions once. All are plain ``doc.user_data`` entries (``redactions`` through a
    getter/setter pair on the same key that keeps its type a list after a msgpack round trip)."""
    for name in EXTENSIONS:
        if Doc.has_extension(name):
            continue
        if name == "redactions":
            Doc.set_extension(name, getter=_get_redactions, setter=_set_redactions)
        else:
            Doc.set_extension(name, default=None)


@Language.factory(
    "privacy_redactor",
    default_config=DEFAULT_CONFIG,
    assigns=["doc._.redacted_text", "doc._.redactions", "doc._.redaction_mapping"],
)
def make_privacy_redactor(
    nlp: Language,
    name: str,
    spans_key: str,
    style: StyleName,
    label_styles: Dict[str, StyleName],
    tag_format: str,
    mask_char: str,
    keep_last: int,
    hash_key: Optional[str],
    hash_key_env: Optional[str],
    hash_length: int,
    locale: str,
    seed: Optional[Union[str, int]],
    seed_env: Optional[str],
    keep_mapping: bool,
) -> "PrivacyRedactor":
    """Build a ``privacy_redactor`` component.

    Args:
        spans_key: the ``doc.spans`` group to redact (``privacy_filter``'s ``spans_key``).
        style: ``tag``, ``mask``, ``hash``, ``surrogate`` or ``remove`` (see ``redact.py``).
        label_styles: per-label styles, e.g. ``{"email": "hash"}``; keys are the labels as they appear in the
            span group (after any ``label_map`` of ``privacy_filter``).
        tag_format: tag style format with fields ``{label}``, ``{LABEL}``, ``{n}``, e.g. ``"[{LABEL}_{n}]"``.
        mask_char: mask style character.
        keep_last: mask style: letters/digits left visible at the end.
        hash_key: must stay null: a key in the config would be saved in clear in config.cfg (and ``spacy
            package``). Use ``hash_key_env``, or ``nlp.get_pipe(name).use_secrets(hash_key=...)``.
        hash_key_env: environment variable holding the HMAC key (read when the component is built; at least
            16 bytes).
        hash_length: hex characters of the hash style (8-64).
        locale: Faker locale of the surrogate style.
        seed: must stay null, like ``hash_key``; use ``seed_env`` or ``use_secrets(seed=...)``.
        seed_env: environment variable holding the surrogate seed (a string); with a seed the same value gets the
            same surrogate in every document. Keep it secret: whoever knows it can test guesses of the originals.
        keep_mapping: keep originals so ``restore`` can undo the redaction.
    """
    refuse_secrets_in_config(name, hash_key=hash_key, seed=seed)
    return PrivacyRedactor(nlp, name, spans_key=spans_key, style=style, label_styles=label_styles,
                           tag_format=tag_format, mask_char=mask_char, keep_last=keep_last, hash_key=hash_key,
                           hash_key_env=hash_key_env, hash_length=hash_length, locale=locale, seed=seed,
                           seed_env=seed_env, keep_mapping=keep_mapping)


class PrivacyRedactor:
    """Replace the spans of ``doc.spans[spans_key]`` and store the result on the doc (see module docstring)."""

    def __init__(self, nlp: Optional[Language] = None, name: str = "privacy_redactor", *, spans_key: str = "pii",
                 style: str = "tag", label_styles: Optional[Dict[str, str]] = None,
                 tag_format: str = DEFAULT_TAG_FORMAT, mask_char: str = "*", keep_last: int = 0,
                 hash_key: Optional[str] = None, hash_key_env: Optional[str] = DEFAULT_HASH_KEY_ENV,
                 hash_length: int = 16, locale: str = "en_US", seed: Optional[Union[int, str]] = None,
                 keep_mapping: bool = False, seed_env: Optional[str] = DEFAULT_SEED_ENV) -> None:
        if not isinstance(spans_key, str) or not spans_key:
            raise ConfigError(f"privacy_redactor: 'spans_key' must be a non-empty string; got {spans_key!r}")
        if hash_key_env is not None and not isinstance(hash_key_env, str):
            raise ConfigError(f"privacy_redactor: 'hash_key_env' must be a variable name or null; "
                              f"got {type(hash_key_env).__name__}")
        if hash_key is not None and not isinstance(hash_key, str):
            raise ConfigError(f"privacy_redactor: 'hash_key' must be a string or null; got {type(hash_key).__name__}")
        if not isinstance(label_styles, (dict, type(None))):
            raise ConfigError(f"privacy_redactor: 'label_styles' must be a mapping label -> style; "
                              f"got {type(label_styles).__name__}")
        self.name = name
        self.spans_key = spans_key
        try:
            self.config = RedactionConfig(style=style, label_styles=dict(label_styles or {}), tag_format=tag_format,
                                          mask_char=mask_char, keep_last=keep_last, hash_length=hash_length,
                                          locale=locale, seed=resolve_seed(seed, seed_env), keep_mapping=keep_mapping)
            self._hash_key = resolve_hash_key(hash_key, hash_key_env)
            self.redactor = Redactor(self.config, hash_key=self._hash_key)
        except ConfigError as exc:
            raise ConfigError(f"privacy_redactor: {exc}") from None
        install_extensions()

    def use_secrets(self, *, hash_key: Optional[Union[str, bytes]] = None,
                    seed: Optional[Union[int, str]] = None) -> None:
        """Set the hash key and/or surrogate seed in code. They are never saved (not in config.cfg, not by
        ``to_disk``): a loaded pipeline reads them from ``hash_key_env``/``seed_env`` again, or gets them here."""
        try:
            if seed is not None:
                self.config = dataclasses.replace(self.config, seed=seed)
            if hash_key is not None:
                self._hash_key = resolve_hash_key(hash_key, None)
            self.redactor = Redactor(self.config, hash_key=self._hash_key)
        except ConfigError as exc:
            raise ConfigError(f"privacy_redactor: {exc}") from None

    def __call__(self, doc: Doc) -> Doc:
        install_extensions()  # a worker process started by spawn has not run the constructor's registration
        if self.spans_key not in doc.spans:
            # Fail closed: a missing group would otherwise pass every PII value through unredacted.
            raise ValueError(f"privacy_redactor: doc.spans has no group {self.spans_key!r}; add 'privacy_filter' "
                             f"before 'privacy_redactor' or set spans_key to the key the detector writes")
        result = self.redactor.redact(doc.text, doc_char_spans(doc, self.spans_key))
        doc._.redacted_text = result.redacted_text
        doc._.redactions = result.redactions
        doc._.redaction_mapping = result.mapping
        return doc


def doc_char_spans(doc: Doc, spans_key: str) -> List[CharSpan]:
    """The group's spans as ``CharSpan``s; scores from ``attrs["scores"]`` when it is parallel, else 1.0.

    Plus the detected character spans that ``privacy_filter`` could not align whole (``attrs["uncovered"]``):
    ``strict``/``contract`` alignment drops or shrinks spans, and every detected character must still be hidden.
    """
    group = doc.spans[spans_key]
    scores = group.attrs.get("scores")
    if scores is None or len(scores) != len(group):
        scores = [1.0] * len(group)
    out = [CharSpan(span.label_, span.start_char, span.end_char, float(score)) for span, score in zip(group, scores)]
    for entry in group.attrs.get("uncovered") or ():
        start, end, label, score = entry
        out.append(CharSpan(str(label), int(start), int(end), float(score)))
    return out


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_PIPELINES: Dict[str, Language] = {}
_REDACTORS: Dict[str, PrivacyRedactor] = {}
_CACHE_SIZE = 4


def _cached(cache: Dict[str, Any], key: str, build: Any) -> Any:
    if key not in cache:
        if len(cache) >= _CACHE_SIZE:
            cache.pop(next(iter(cache)))
        cache[key] = build()
    return cache[key]


def redact(text_or_texts: Union[str, Iterable[str]], *, model: str = DEFAULT_MODEL, style: str = "tag",
           nlp: Optional[Language] = None, spans_key: str = "pii", backend: str = "auto", device: str = "auto",
           batch_size: int = 32, **options: Any) -> Union[str, List[str]]:
    """Detect and redact in one call: a string gives a string, an iterable of strings gives a list.

    Without ``nlp`` a pipeline ``spacy.blank("xx") + privacy_filter(model, backend, device)`` is built on first
    use and reused by later calls with the same model settings (the default model is fetched from the Hugging
    Face Hub once, then read from the cache). With ``nlp``, that pipeline detects (it must write
    ``doc.spans[spans_key]``, e.g. through ``privacy_filter``). The redaction itself is always done here with
    ``style`` and ``options`` (any ``privacy_redactor`` setting: label_styles, tag_format, seed, ...).
    An input that ``nlp``'s error handler skipped gives None in its place, so results stay aligned with inputs.
    """
    single = isinstance(text_or_texts, str)
    if not single and not isinstance(text_or_texts, Iterable):
        raise TypeError(f"redact() takes a string or an iterable of strings; got {type(text_or_texts).__name__}")
    texts = [text_or_texts] if single else list(text_or_texts)
    bad = [i for i, text in enumerate(texts) if not isinstance(text, str)]
    if bad:
        raise TypeError(f"redact() needs strings; items {bad[:10]} are not")
    bad = [i for i, text in enumerate(texts) if not _encodable(text)]
    if bad:  # spaCy's string store would fail deep inside its tokenizer with a message quoting the character
        raise ValueError(f"redact(): items {bad[:10]} contain lone surrogates (U+D800-U+DFFF), which are not "
                         f"valid Unicode and which spaCy cannot tokenize; read the text with errors='replace'")
    settings = dict(options, style=style, spans_key=spans_key)
    redactor = _cached(_REDACTORS, json.dumps(settings, sort_keys=True, default=str),
                       lambda: PrivacyRedactor(None, **settings))
    if nlp is None:
        import spacy

        def build() -> Language:
            pipeline = spacy.blank("xx")
            pipeline.add_pipe("privacy_filter", config={"model": model, "backend": backend, "device": device,
                                                        "spans_key": spans_key})
            return pipeline

        nlp = _cached(_PIPELINES, json.dumps([model, backend, device, spans_key]), build)
    # Reliability fix (re-apply if this function moves): results are placed by input index, because a
    # non-raising error handler (nlp.set_error_handler) drops failed docs from nlp.pipe; a dropped input gives
    # None (never its unredacted text) instead of shifting every later result onto the wrong input.
    out: List[Optional[str]] = [None] * len(texts)
    for doc, index in nlp.pipe(zip(texts, range(len(texts))), as_tuples=True, batch_size=batch_size):
        out[index] = redactor(doc)._.redacted_text
    failed = out.count(None)
    if failed:
        logging.getLogger("spacy_privfilter").warning("redact(): %d of %d input(s) failed in the pipeline and "
                                                      "give None", failed, len(texts))
    return out[0] if single else out
