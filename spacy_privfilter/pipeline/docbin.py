"""Gold spans from spaCy ``DocBin`` files (Prodigy and ``spacy train`` data), for the training package.

Kept in ``pipeline/`` because it is the only package that imports spaCy.
"""
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

from ..errors import PrivFilterError


def read_docbin(path: Path, *, spans_key: str = "spans") -> Iterator[Tuple[str, List[Dict[str, Any]]]]:
    """``(text, spans)`` per doc: ``doc.spans[spans_key]`` when the doc has that group, else ``doc.ents``."""
    from spacy.tokens import DocBin
    from spacy.vocab import Vocab

    try:
        doc_bin = DocBin().from_disk(path)
    except Exception as exc:  # spaCy raises several types for a damaged file
        raise PrivFilterError(f"{path}: not a readable spaCy DocBin ({type(exc).__name__})") from exc
    for doc in doc_bin.get_docs(Vocab()):
        group = doc.spans[spans_key] if spans_key in doc.spans else doc.ents
        yield doc.text, [{"start": s.start_char, "end": s.end_char, "label": s.label_} for s in group]
