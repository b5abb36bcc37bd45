"""Blank spaCy pipelines with ``privacy_filter`` (and ``privacy_redactor``), for callers that stay spaCy-free."""
from __future__ import annotations

from typing import Any, Mapping

import spacy
from spacy.language import Language


def has_language(lang: str) -> bool:
    """Whether spaCy knows the language code ``lang`` (``xx`` is any language)."""
    try:
        spacy.util.get_lang_class(lang)
    except ImportError:
        return False
    return True


def blank(lang: str = "xx") -> Language:
    """``spacy.blank(lang)``: the one place outside the components where spaCy is imported for callers."""
    return spacy.blank(lang)


def blank_pipeline(lang: str = "xx", *, filter_config: Mapping[str, Any],
                   redactor_config: Mapping[str, Any] | None = None) -> Language:
    """``spacy.blank(lang)`` + ``privacy_filter(**filter_config)`` [+ ``privacy_redactor(**redactor_config)``]."""
    nlp = blank(lang)
    nlp.add_pipe("privacy_filter", config=dict(filter_config))
    if redactor_config is not None:
        nlp.add_pipe("privacy_redactor", config=dict(redactor_config))
    return nlp
