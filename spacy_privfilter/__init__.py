"""spacy-privfilter: find and scrub personal data with the OpenAI Privacy Filter model family in spaCy.

``import spacy_privfilter`` imports neither torch, mlx nor spaCy (its Doc extensions register when spaCy is
imported); they load on first use:

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

from ._spacy_hook import register_extensions_on_import as _register_extensions


def _package_version() -> str:
    """The installed distribution's version; ``0.0.0+unknown`` in a bare checkout that is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spacy-privfilter")
    except PackageNotFoundError:
        return "0.0.0+unknown"


__version__ = _package_version()
# A DocBin of redacted docs must load in a fresh process: the Doc extensions register with spaCy's first import.
_register_extensions()

__all__ = [
    "BackendUnavailableError", "CharSpan", "CheckpointError", "ConfigError", "DEFAULT_MODEL", "Detector",
    "LabelSchemeError", "ModelNotFoundError", "PrivFilterError", "RedactionConfig", "Redactor", "TokenizerError",
    "__version__", "convert", "load_backend", "redact", "redact_text", "restore",
]
