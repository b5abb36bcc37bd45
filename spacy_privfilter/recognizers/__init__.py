"""Site-specific detection beside the model: validated patterns, deny lists and allow lists (no spaCy here).

The public entry point is ``Recognizers`` (see ``engine.py``); the spaCy component ``privacy_patterns`` wraps
it. Modules: ``validators`` (checksums), ``patterns`` (rules and ``Found`` spans), ``library`` (shipped
recognizers by name), ``lists`` (deny/allow), ``merge`` (the merging policy), ``files`` (JSONL readers).
"""
from __future__ import annotations

from .engine import MODEL_SOURCE, Recognizers, as_found
from .files import LIST_KINDS, ListKind, read_lines
from .library import RECOGNIZERS, RecognizerName
from .lists import DENY_SOURCE, AllowEntry, AllowList, DenyList, DenyTerm
from .merge import merge_found
from .patterns import PATTERN_KINDS, Found, Pattern, PatternKind, parse_pattern
from .validators import VALIDATORS, register_validator

EXTERNAL_SOURCE = "external"  # spans another component (e.g. spaCy's span_ruler) added to the group

__all__ = [
    "AllowEntry", "AllowList", "DENY_SOURCE", "DenyList", "DenyTerm", "EXTERNAL_SOURCE", "Found", "LIST_KINDS",
    "ListKind", "MODEL_SOURCE", "PATTERN_KINDS", "Pattern", "PatternKind", "RECOGNIZERS", "RecognizerName",
    "Recognizers", "VALIDATORS", "as_found", "merge_found", "parse_pattern", "read_lines", "register_validator",
]
