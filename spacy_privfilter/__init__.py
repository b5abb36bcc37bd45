"""spacy-privfilter: find and scrub personal data with the OpenAI Privacy Filter model family in spaCy.

``import spacy_privfilter`` imports neither torch nor mlx; the runtimes load lazily.
"""
from __future__ import annotations

from .errors import (BackendUnavailableError, CheckpointError, ConfigError, LabelSchemeError, ModelNotFoundError,
                     PrivFilterError, TokenizerError)
from .spans import CharSpan

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError", "CharSpan", "CheckpointError", "ConfigError", "LabelSchemeError",
    "ModelNotFoundError", "PrivFilterError", "TokenizerError", "__version__",
]
