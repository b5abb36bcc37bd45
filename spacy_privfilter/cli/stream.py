"""The streaming loop behind ``redact`` and ``detect``: batches of input positions through ``nlp.pipe``.

At most one batch of documents is held in memory. After every batch the outputs are flushed and the progress
file is replaced, so a run killed at any moment can be resumed; see ``outputs.py``.
"""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Callable, Iterable, Iterator

from .inputs import Item
from .outputs import Outputs, Progress

log = logging.getLogger("spacy_privfilter.cli")

# spaCy adds every new token string to the vocab and never forgets it (~0.5 KB each), and PII is mostly unique
# strings, so a long stream would grow without bound. Past this many lexemes the pipeline is rebuilt (reusing the
# loaded model); tokenization does not depend on the vocab's contents, so results are unchanged.
VOCAB_RENEW_LIMIT = 100_000


@dataclass
class RunStats:
    """Counts of one run (shown in the summary line)."""

    positions: int = 0
    docs: int = 0
    spans: int = 0
    errors: int = 0
    error_messages: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started


def batched(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def progress_bar(*, total: int | None, enabled: bool, initial: int = 0) -> Any:
    """A tqdm bar on stderr (docs and docs/s) when enabled and tqdm is installed, else None."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        log.debug("tqdm is not installed; no progress bar (pip install tqdm)")
        return None
    return tqdm(total=total, initial=initial, unit="doc", file=sys.stderr, dynamic_ncols=True, smoothing=0.1)


def run(nlp: Any, items: Iterable[Item], outputs: Outputs, progress: Progress, *,
        write: Callable[[Item, Any], int], batch_size: int, done: int = 0, bar: Any = None,
        stats: RunStats | None = None, renew: Callable[[], Any] | None = None) -> RunStats:
    """Process ``items`` in batches; ``write(item, docs)`` writes one result (``docs``: one per document of the
    item, see ``Item.documents``) and returns its span count.

    Error items are reported (file and line, never text) and counted; nothing is written for them.
    ``done`` is the number of positions an earlier, interrupted run finished (resume). ``renew()`` returns a
    fresh pipeline, used when the vocab passes ``VOCAB_RENEW_LIMIT`` so that memory stays flat.
    """
    stats = stats or RunStats()
    progress.save(done, outputs.sizes)
    for batch in batched(items, batch_size):
        batch = [_within_limit(item, getattr(nlp, "max_length", 0)) for item in batch]
        docs = iter(nlp.pipe([text for item in batch for text in item.documents], batch_size=batch_size))
        for item in batch:
            if item.error is not None:
                stats.errors += 1
                stats.error_messages.append(item.error)
                log.error("%s", item.error)
            elif item.text is not None or item.record is not None:
                stats.spans += write(item, [next(docs) for _ in item.documents])
                stats.docs += 1
        outputs.flush()
        done += len(batch)
        stats.positions += len(batch)
        progress.save(done, outputs.sizes)
        if bar is not None:
            bar.update(len(batch))
        if renew is not None and len(getattr(nlp, "vocab", ())) > VOCAB_RENEW_LIMIT:
            log.debug("vocab passed %d entries; renewing the pipeline", VOCAB_RENEW_LIMIT)
            nlp = renew()
    outputs.close()
    return stats


def _within_limit(item: Item, max_length: int) -> Item:
    """``item``, or an error item when its text is longer than spaCy accepts (which would stop the whole run)."""
    longest = max(map(len, item.documents), default=0)
    if max_length and longest > max_length:
        return Item(item.source, item.line, error=f"{item.where}: {longest} characters, more than spaCy's "
                                                  f"nlp.max_length of {max_length}; split it into smaller documents; "
                                                  f"skipped")
    return item


def summary(verb: str, stats: RunStats) -> str:
    rate = stats.docs / stats.seconds if stats.seconds > 0 else 0.0
    line = (f"{verb} {stats.docs} document(s), {stats.spans} span(s) in {stats.seconds:.1f} s "
            f"({rate:.1f} docs/s)")
    if stats.errors:
        line += f"; {stats.errors} input error(s), see above"
    return line
