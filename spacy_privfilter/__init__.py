"""spacy-privfilter: find and scrub personal data with the OpenAI Privacy Filter model family in spaCy.

``import spacy_privfilter`` imports neither torch, mlx nor spaCy (its Doc extensions register when spaCy is
imported); everything heavier loads on first use:

    >>> import spacy
    >>> nlp = spacy.blank("en")
    >>> nlp.add_pipe("privacy_filter")          # registered through the spacy_factories entry point
    >>> nlp.add_pipe("privacy_redactor")
    >>> nlp("Call Jane at 555-201-7731.")._.redacted_text
"""
from __future__ import annotations

import importlib
from typing import Any

from .errors import (BackendUnavailableError, CheckpointError, ConfigError, LabelSchemeError, ModelNotFoundError,
                     PrivFilterError, TokenizerError)
from .spans import CharSpan


def _package_version() -> str:
    """The installed distribution's version; the source tree's own when it is not installed (a bare checkout)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spacy-privfilter")
    except PackageNotFoundError:
        return "0.0.0+unknown"

# The submodule ``redact`` (pure functions) and the one-liner ``redact()`` share a name: bind the submodule first,
# so that the function defined below stays the package attribute whatever is imported later.
from .redaction import redactor as _redact_module  # noqa: E402
from .redaction.redactor import RedactionConfig, Redactor, redact_text, restore  # noqa: E402

from ._spacy_hook import register_extensions_on_import as _register_extensions  # noqa: E402

__version__ = _package_version()
# A DocBin of redacted docs must load in a fresh process: the Doc extensions register with spaCy's first import.
_register_extensions()

# name -> module that defines it; resolved on first attribute access (PEP 562).
_LAZY = {
    "Detector": "detector",
    "DEFAULT_MODEL": "detector",
    "load_backend": "backends",
    "convert": "checkpoint.convert",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'spacy_privfilter' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def redact(text_or_texts: Any, **options: Any) -> Any:
    """Redact one text (-> str) or many (-> list[str]) with a cached privacy_filter + privacy_redactor pipeline.

    Options are those of :func:`spacy_privfilter.pipeline.privacy_redactor.redact` (model, style, nlp, ...).
    """
    from .pipeline.privacy_redactor import redact as _redact

    return _redact(text_or_texts, **options)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "BackendUnavailableError", "CharSpan", "CheckpointError", "ConfigError", "DEFAULT_MODEL", "Detector",
    "LabelSchemeError", "ModelNotFoundError", "PrivFilterError", "RedactionConfig", "Redactor", "TokenizerError", "__version__", "convert",
    "load_backend", "redact", "redact_text", "restore",
]
