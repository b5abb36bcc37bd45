"""The Doc extensions ``privacy_redactor`` writes, registered idempotently.

``import spacy_privfilter`` registers them, so a fresh process can read a ``DocBin`` of redacted docs (spaCy
raises E046 for an unregistered extension) without building a pipeline first. Only spaCy is imported here.
"""
from typing import Any, Dict, List, Optional

from spacy.tokens import Doc

EXTENSIONS = ("redacted_text", "redactions", "redaction_mapping")

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
