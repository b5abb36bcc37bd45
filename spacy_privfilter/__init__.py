"""spacy-privfilter: find and scrub personal data with the OpenAI Privacy Filter model family in spaCy.

``import spacy_privfilter`` imports neither torch, mlx nor spaCy; they load on first use:

    >>> import spacy
    >>> nlp = spacy.blank("en")
    >>> nlp.add_pipe("privacy_filter")          # registered through the spacy_factories entry point
    >>> nlp.add_pipe("privacy_redactor")
    >>> nlp("Call Jane at 555-201-7731.")._.redacted_text
"""
from __future__ import annotations

from .api import redact
from .backends import load_backend
from .checkpoint.convert import convert
from .detector import DEFAULT_MODEL, Detector
from .errors import (BackendUnavailableError, CheckpointError, ConfigError, LabelSchemeError, ModelNotFoundError,
                     PrivFilterError, TokenizerError)
from .redaction.redactor import RedactionConfig, Redactor, redact_text, restore
from .spans import CharSpan

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError", "CharSpan", "CheckpointError", "ConfigError", "DEFAULT_MODEL", "Detector",
    "LabelSchemeError", "ModelNotFoundError", "PrivFilterError", "RedactionConfig", "Redactor", "TokenizerError",
    "__version__", "convert", "load_backend", "redact", "redact_text", "restore",
]
