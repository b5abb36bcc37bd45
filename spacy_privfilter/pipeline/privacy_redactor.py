"""spaCy component ``privacy_redactor``.

Place the component after ``privacy_filter``; it reads ``doc.spans[spans_key]`` (scores from the group's
``attrs["scores"]`` decide overlaps) and writes, through ``doc.user_data``-backed extensions that survive
``DocBin`` and ``nlp.pipe(n_process=...)``:

- ``doc._.redacted_text``: the text with every span replaced;
- ``doc._.redactions``: one plain dict per replacement ``{start, end, label, replacement, redacted_start,
  redacted_end}`` (with ``keep_mapping`` also ``original``);
- ``doc._.redaction_mapping``: ``{replacement: original}`` with ``keep_mapping``, else None; a replacement that
  stands for several different originals maps to None (``restore`` refuses it; the records restore exactly).

Without ``keep_mapping`` no original value is written anywhere on the doc (the doc's own text and spans are of
course still there: store or send ``doc._.redacted_text``, not the doc). The pure logic lives in ``redaction/``.
"""
import dataclasses
from typing import Any, Dict, List, Optional, Union

from spacy.language import Language
from spacy.tokens import Doc

from ..errors import ConfigError
from ..redaction.redactor import DEFAULT_TAG_FORMAT, RedactionConfig, Redactor
from ..redaction.secrets import DEFAULT_SEED_ENV, refuse_secrets_in_config, resolve_seed
from ..redaction.values import DEFAULT_HASH_KEY_ENV, Style, resolve_hash_key
from ..spans import CharSpan
from .extensions import EXTENSIONS, install_extensions  # noqa: F401  (re-exported)
from .span_groups import span_scores

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


@Language.factory(
    "privacy_redactor",
    default_config=DEFAULT_CONFIG,
    assigns=["doc._.redacted_text", "doc._.redactions", "doc._.redaction_mapping"],
    requires=["doc.spans"],
)
def make_privacy_redactor(
    nlp: Language,
    name: str,
    spans_key: str,
    style: Style,
    label_styles: Dict[str, Style],
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
        style: ``tag``, ``mask``, ``hash``, ``surrogate`` or ``remove`` (see ``redaction/redactor.py``).
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
                 style: Style = "tag", label_styles: Optional[Dict[str, Style]] = None,
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
    """The group's spans as ``CharSpan``s; scores from ``attrs["scores"]``, read as ``span_groups`` explains
    when another component added spans without scores (those get 1.0).

    Plus the detected character spans that ``privacy_filter`` could not align whole (``attrs["uncovered"]``):
    ``strict``/``contract`` alignment drops or shrinks spans, and every detected character must still be hidden.
    """
    group = doc.spans[spans_key]
    out = [CharSpan(span.label_, span.start_char, span.end_char, score)
           for span, score in zip(group, span_scores(group))]
    for entry in group.attrs.get("uncovered") or ():
        start, end, label, score = entry
        out.append(CharSpan(str(label), int(start), int(end), float(score)))
    return out
