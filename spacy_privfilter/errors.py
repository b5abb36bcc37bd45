"""Exception classes.

Messages say what was expected, what was given and how to fix it. They never contain
document or span text: only counts, offsets, labels, file names and keys.
"""
from __future__ import annotations


class PrivFilterError(Exception):
    """Base class for every error raised by spacy-privfilter."""


class ConfigError(PrivFilterError, ValueError):
    """A setting (factory config, model config, option) is invalid."""


class CheckpointError(PrivFilterError, ValueError):
    """A checkpoint folder or file is missing, malformed, truncated or of the wrong kind."""


class ModelNotFoundError(CheckpointError, FileNotFoundError):
    """A local folder or Hub repo (or one of its files) could not be found or fetched."""


class TokenizerError(PrivFilterError, RuntimeError):
    """The o200k_base encoding could not be loaded."""


class LabelSchemeError(PrivFilterError, ValueError):
    """An id2label mapping is not a valid O + B/I/E/S label set."""


class BackendUnavailableError(PrivFilterError, ImportError):
    """A runtime extra (torch, mlx) is not installed. The message names the pip install that fixes it."""
