"""Text -> token ids with exact code-point offsets (tiktoken ``o200k_base``).

The model family uses tiktoken's ``o200k_base`` with no BOS/EOS tokens. User text is data:
literal special-token strings such as ``<|endoftext|>`` are encoded as ordinary text.

Offsets are half-open code-point offsets into the *original* Python string (what ``Doc.text``
indexes). A token whose bytes cover part of a multi-byte character covers that whole character,
so neighbouring tokens may share a character; offsets are monotone and cover every position.
Lone surrogates (which UTF-8 cannot encode) are tokenised as U+FFFD, one code point for one,
so offsets stay aligned to the original string.

Loading order for the encoding:
    1. an explicit ``o200k_base.tiktoken`` file (or a folder holding one), checked against the
       sha256 tiktoken pins for it, so a model folder works fully offline;
    2. ``tiktoken.get_encoding("o200k_base")``, which honours ``TIKTOKEN_CACHE_DIR``.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import TokenizerError

ENCODING_NAME = "o200k_base"
TIKTOKEN_FILE = "o200k_base.tiktoken"
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
ENDOFTEXT_ID = 199999
SPECIAL_TOKENS = {"<|endoftext|>": ENDOFTEXT_ID, "<|endofprompt|>": 200018}
# The o200k split pattern (tiktoken_ext.openai_public.o200k_base), needed to build the Encoding from a file.
O200K_PATTERN = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"""
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"""
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])
_SURROGATES = re.compile("[\ud800-\udfff]")
_HOW_TO_FIX = (
    "Fix: either set TIKTOKEN_CACHE_DIR to a folder holding tiktoken's cached o200k_base file "
    "(or allow network access on first use), or pass an explicit path to an 'o200k_base.tiktoken' file "
    "(or a model folder that contains one)")


@dataclass(frozen=True, eq=False)
class TokenizedText:
    """Token ids of one text with their code-point offsets.

    Attributes:
        input_ids: int64 [T] token ids.
        char_starts: int64 [T] first code point each token touches (inclusive).
        char_ends: int64 [T] one past the last code point each token touches (exclusive).
    """

    input_ids: np.ndarray
    char_starts: np.ndarray
    char_ends: np.ndarray

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


class Tokenizer:
    """A tiktoken encoding plus the per-token byte lengths that offsets are computed from.

    Args:
        encoding: a ``tiktoken.Encoding`` for ``o200k_base``.
    """

    def __init__(self, encoding) -> None:
        self.encoding = encoding
        self.name = encoding.name
        self.pad_token_id = int(encoding.eot_token)
        self._byte_lengths = _token_byte_lengths(encoding)

    def __repr__(self) -> str:
        return f"Tokenizer({self.name!r}, n_vocab={self.encoding.n_vocab})"

    def encode(self, text: str) -> TokenizedText:
        """Tokenise ``text`` (as plain data) and give each token its code-point offsets."""
        if not isinstance(text, str):
            raise TypeError(f"encode() needs a str; got {type(text).__name__}")
        try:
            data = text.encode("utf-8")
            clean = text
        except UnicodeEncodeError:
            # One U+FFFD per surrogate code point keeps the code-point count, hence the offsets.
            clean = _SURROGATES.sub("\ufffd", text)
            data = clean.encode("utf-8")
        input_ids = np.asarray(self.encoding.encode_ordinary(clean), dtype=np.int64)
        byte_ends = np.cumsum(self._byte_lengths[input_ids], dtype=np.int64)
        byte_starts = byte_ends - self._byte_lengths[input_ids]
        if len(data) == len(clean):  # ASCII: a byte is a code point
            return TokenizedText(input_ids, byte_starts, byte_ends)
        raw = np.frombuffer(data, dtype=np.uint8)
        # Code point index of every byte: count lead (non-continuation) bytes up to it.
        char_of_byte = np.cumsum((raw & 0xC0) != 0x80, dtype=np.int64) - 1
        char_starts = char_of_byte[byte_starts]
        char_ends = char_of_byte[byte_ends - 1] + 1
        return TokenizedText(input_ids, char_starts, char_ends)

    def token_bytes(self, input_ids: np.ndarray) -> list[bytes]:
        """The byte string of each token id (for checks; not on the hot path)."""
        return self.encoding.decode_tokens_bytes([int(i) for i in input_ids])


def _token_byte_lengths(encoding) -> np.ndarray:
    """int64 table: byte length of every token id (0 for ids that do not exist)."""
    lengths = np.zeros(encoding.max_token_value + 1, dtype=np.int64)
    ranks = getattr(encoding, "_mergeable_ranks", None)
    if isinstance(ranks, dict) and ranks:
        ids = np.fromiter(ranks.values(), dtype=np.int64, count=len(ranks))
        lengths[ids] = np.fromiter(map(len, ranks.keys()), dtype=np.int64, count=len(ranks))
    else:  # a tiktoken without the private table: ask token by token (slower, once)
        for token_id in range(encoding.max_token_value + 1):
            try:
                lengths[token_id] = len(encoding.decode_single_token_bytes(token_id))
            except KeyError:
                pass
    for text, token_id in encoding._special_tokens.items():
        lengths[token_id] = len(text.encode("utf-8"))
    return lengths


def _find_file(path: str | os.PathLike) -> Path | None:
    """``path`` itself if it is a file; ``path/o200k_base.tiktoken`` for a folder (None if absent)."""
    p = Path(path).expanduser()
    if p.is_dir():
        inner = p / TIKTOKEN_FILE
        return inner if inner.is_file() else None
    if not p.is_file():
        raise TokenizerError(f"tokenizer file '{p.name}' does not exist (given path: {p}). {_HOW_TO_FIX}")
    return p


def _encoding_from_file(path: Path):
    import tiktoken

    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != O200K_SHA256:
        raise TokenizerError(
            f"'{path}' is not tiktoken's o200k_base file: sha256 {digest} != expected {O200K_SHA256}. "
            f"{_HOW_TO_FIX}")
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return tiktoken.Encoding(name=ENCODING_NAME, pat_str=O200K_PATTERN, mergeable_ranks=ranks,
                             special_tokens=dict(SPECIAL_TOKENS))


def _encoding_from_tiktoken():
    import tiktoken

    try:
        return tiktoken.get_encoding(ENCODING_NAME)
    except Exception as exc:  # network, cache or hash errors all mean the same thing to the user
        cache = os.environ.get("TIKTOKEN_CACHE_DIR")
        where = f"TIKTOKEN_CACHE_DIR={cache}" if cache else "TIKTOKEN_CACHE_DIR is not set"
        raise TokenizerError(
            f"could not load the o200k_base encoding ({type(exc).__name__}; {where}). {_HOW_TO_FIX}") from exc


@functools.lru_cache(maxsize=8)
def _cached_tokenizer(file: str | None, cache_dir: str | None) -> Tokenizer:
    # cache_dir is part of the key so that changing TIKTOKEN_CACHE_DIR is honoured.
    encoding = _encoding_from_file(Path(file)) if file else _encoding_from_tiktoken()
    return Tokenizer(encoding)


def get_tokenizer(path: str | os.PathLike | None = None) -> Tokenizer:
    """Load (once) the ``o200k_base`` tokenizer.

    Args:
        path: an ``o200k_base.tiktoken`` file, or a model folder that may hold one; None uses tiktoken's
            own loader (honours ``TIKTOKEN_CACHE_DIR``). A folder without the file also falls back to it.
    Raises:
        TokenizerError: the file is missing or has the wrong sha256, or tiktoken cannot load the encoding.
    """
    file = _find_file(path) if path is not None else None
    return _cached_tokenizer(str(file.resolve()) if file else None, os.environ.get("TIKTOKEN_CACHE_DIR"))
