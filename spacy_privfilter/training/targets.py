"""Gold character spans -> BIOES token targets on the o200k tokens.

The reverse of the detector's alignment (``spans.tags_to_char_spans``): a token belongs to a gold span when
its code-point range overlaps it; the span's tokens get ``S-x`` (one token) or ``B-x I-x ... E-x``. A span
whose tokens, mapped forward again (first token start .. last token end, whitespace trimmed), do not give
back exactly its offsets is *misaligned* (it starts or ends inside a token): it is still tagged, and counted.
A span that shares a token with an earlier span is a *conflict*: it is skipped, and counted.
"""
from __future__ import annotations

import logging
from typing import NamedTuple, Sequence

import numpy as np

from ..labels import LabelScheme
from ..spans import trim_whitespace
from ..tokens import TokenizedText, Tokenizer
from .data import GoldSpan, LabelledDoc

logger = logging.getLogger(__name__)


class TokenTargets(NamedTuple):
    """int64 [T] label ids per token, plus how many gold spans did not map cleanly."""

    tags: np.ndarray
    misaligned: int
    conflicts: int


class EncodedDoc(NamedTuple):
    """A labelled document on tokens: ids, BIOES targets and code-point offsets (all [T])."""

    input_ids: np.ndarray
    tags: np.ndarray
    char_starts: np.ndarray
    char_ends: np.ndarray


def token_targets(text: str, tokens: TokenizedText, spans: Sequence[GoldSpan], scheme: LabelScheme) -> TokenTargets:
    """BIOES label ids for ``tokens`` of ``text`` from gold ``spans`` (labels must be classes of ``scheme``)."""
    tags = np.full(len(tokens), scheme.outside_id, dtype=np.int64)
    taken = np.zeros(len(tokens), dtype=bool)
    class_index = {name: k for k, name in enumerate(scheme.classes)}
    misaligned = conflicts = 0
    for start, end, label in sorted(spans):
        k = class_index[label]
        first = int(np.searchsorted(tokens.char_ends, start, side="right"))  # first token ending after start
        last = int(np.searchsorted(tokens.char_starts, end, side="left")) - 1  # last token starting before end
        if first > last:
            misaligned += 1
            continue
        if taken[first:last + 1].any():
            conflicts += 1
            continue
        taken[first:last + 1] = True
        if first == last:
            tags[first] = scheme.single_ids[k]
        else:
            tags[first] = scheme.begin_ids[k]
            tags[first + 1:last] = scheme.inside_ids[k]
            tags[last] = scheme.end_ids[k]
        forward = trim_whitespace(text, int(tokens.char_starts[first]), int(tokens.char_ends[last]))
        misaligned += forward != (start, end)
    return TokenTargets(tags, misaligned, conflicts)


def encode_docs(docs: Sequence[LabelledDoc], tokenizer: Tokenizer, scheme: LabelScheme) -> list[EncodedDoc]:
    """Tokenise and tag every document; misaligned and conflicting spans are logged as counts."""
    encoded: list[EncodedDoc] = []
    misaligned = conflicts = 0
    for doc in docs:
        tokens = tokenizer.encode(doc.text)
        targets = token_targets(doc.text, tokens, doc.spans, scheme)
        misaligned += targets.misaligned
        conflicts += targets.conflicts
        encoded.append(EncodedDoc(tokens.input_ids, targets.tags, tokens.char_starts, tokens.char_ends))
    if misaligned or conflicts:
        logger.warning("%d gold span(s) do not start and end on token boundaries (tagged on the tokens they "
                       "touch); %d overlap an earlier span (skipped)", misaligned, conflicts)
    return encoded


def chunk_doc(doc: EncodedDoc, max_tokens: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(input_ids, tags)`` pieces of at most ``max_tokens`` tokens covering the document in order."""
    return [(doc.input_ids[i:i + max_tokens], doc.tags[i:i + max_tokens])
            for i in range(0, len(doc.input_ids), max_tokens)]
