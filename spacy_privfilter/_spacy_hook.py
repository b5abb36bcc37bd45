"""Register the package's Doc extensions as soon as spaCy's ``spacy.tokens`` is imported.

A ``DocBin`` of redacted docs read in a fresh process needs ``doc._.redacted_text`` & co. registered, or spaCy
raises E046. Registering them needs spaCy, and importing spaCy imports thinc, which imports torch when it is
installed (seconds). So ``import spacy_privfilter`` registers them at once if spaCy is already imported, and
otherwise right after ``spacy.tokens`` is first imported, through a one-shot import hook; nothing is loaded early.
"""
from __future__ import annotations

import importlib.abc
import sys
from typing import Any

TARGET = "spacy.tokens"


def _install() -> None:
    from .pipeline.extensions import install_extensions

    install_extensions()


class _AfterSpacyTokens(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the real loader of ``spacy.tokens`` so that registration follows it."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            _remove()
            _install()

        spec.loader.exec_module = exec_module  # this loader instance serves this one module
        return spec


_FINDER = _AfterSpacyTokens()


def _remove() -> None:
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)


def register_extensions_on_import() -> None:
    """Register now when spaCy is loaded, else once ``spacy.tokens`` is (idempotent)."""
    if TARGET in sys.modules:
        _install()
    elif _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
