"""Replacement values for one span: the style names, value normalisation, keyed hashing, masking.

A leaf module (standard library only) so that ``redactor`` and ``surrogates`` both build on it.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re
from typing import Literal, get_args

from ..errors import ConfigError

Style = Literal["tag", "mask", "hash", "surrogate", "remove"]
STYLES: tuple[Style, ...] = get_args(Style)
DEFAULT_HASH_KEY_ENV = "PRIVFILTER_HASH_KEY"


def normalize_value(value: str) -> str:
    """The key under which two mentions count as "the same value": case-folded, whitespace collapsed."""
    return " ".join(value.split()).casefold()


def resolve_hash_key(hash_key: str | bytes | None = None, hash_key_env: str | None = DEFAULT_HASH_KEY_ENV
                     ) -> bytes | None:
    """The HMAC key: ``hash_key`` if given, else the environment variable named ``hash_key_env``, else None."""
    if hash_key:
        return hash_key.encode("utf-8") if isinstance(hash_key, str) else bytes(hash_key)
    value = os.environ.get(hash_key_env) if hash_key_env else None
    return value.encode("utf-8") if value else None


def hash_value(value: str, *, key: bytes, length: int = 16) -> str:
    """Keyed HMAC-SHA256 of the normalised value, as ``length`` hex characters.

    If the hex happens to contain the value itself (possible for short all-digit values), the digest of the
    value with a counter is used instead; that choice is deterministic, so the result stays stable across documents.
    """
    if not key:
        raise ConfigError("hash needs a non-empty key; refusing to use an unkeyed hash")
    norm = normalize_value(value)
    message = norm.encode("utf-8", "surrogatepass")  # lone surrogates hash too, rather than crash
    for attempt in range(64):
        digest = hmac.new(key, message + (b"\x00%d" % attempt if attempt else b""), hashlib.sha256).hexdigest()
        digest = digest[:length]
        if not norm or norm not in digest:
            return digest
    return digest  # not reached in practice: 64 digests that all contain the value


# Numbers written with separators (phone, card, SSN, date, time): the separators say only which format it is.
_NUMBER_FORMAT = re.compile(r"[\d\s\-./()+:]*\d[\d\s\-./()+:]*")


def mask_value(value: str, *, mask_char: str = "*", keep_last: int = 0) -> str:
    """Mask every character of ``value``, keeping its length; only numbers in a known written format (digits
    with ``- . / ( ) + :`` and spaces: phone, card, SSN, date) keep their separators (``***-***-1234``).
    A value with no letters or digits at all (a password of symbols, an emoji) is masked whole."""
    keep_separators = _NUMBER_FORMAT.fullmatch(value) is not None
    maskable = [i for i, ch in enumerate(value) if ch.isalnum() or not keep_separators]
    alnum = [i for i in maskable if value[i].isalnum()]
    visible = set(alnum[-keep_last:]) if 0 < keep_last < len(alnum) else set()
    chars = list(value)
    for i in maskable:
        if i not in visible:
            chars[i] = mask_char
    return "".join(chars)
