"""Where the hash key and the surrogate seed come from, and what is refused, so that neither is ever written out.

Both are secrets: with the hash key anyone can hash guesses and compare (a phone exchange of 10^4 numbers is
enumerated in about 0.02 s; names, dates of birth and ZIP codes are just as small sets), and with the seed anyone
can regenerate surrogates for guesses. So they are read from environment variables (or set in code), never taken
from a pipeline config (which spaCy writes in clear to config.cfg and ``spacy package``, and prints on any config
error), never put in progress files, and never quoted in messages. A hash key must have at least
``MIN_KEY_BYTES`` bytes; the hashed values themselves are what is guessable, so keep the key secret even when it is
strong. Pure Python; no spaCy.
"""
from __future__ import annotations

import os
from typing import Any

from ..errors import ConfigError

DEFAULT_SEED_ENV = "PRIVFILTER_SURROGATE_SEED"
MIN_KEY_BYTES = 16
KEY_HINT = "python -c \"import secrets; print(secrets.token_hex(32))\""


def check_key_strength(key: bytes) -> None:
    """Refuse a hash key shorter than ``MIN_KEY_BYTES`` (its length is all the message says about it)."""
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"the hash key is {len(key)} byte(s) long; at least {MIN_KEY_BYTES} are required, since a "
                          f"short key can be guessed and then every hash tested against guesses of the values. "
                          f"Make one with: {KEY_HINT}")


def resolve_seed(seed: Any = None, seed_env: str | None = DEFAULT_SEED_ENV) -> Any:
    """The surrogate seed: ``seed`` if given, else the environment variable named ``seed_env``, else None."""
    if seed_env is not None and not isinstance(seed_env, str):
        raise ConfigError(f"'seed_env' must be a variable name or null; got {type(seed_env).__name__}")
    if seed is not None:
        return seed
    return os.environ.get(seed_env) or None if seed_env else None


def refuse_secrets_in_config(name: str, *, hash_key: Any = None, seed: Any = None) -> None:
    """A pipeline config holding a secret would be saved in clear: refuse it, naming the setting only."""
    for setting, value, env in (("hash_key", hash_key, "hash_key_env"), ("seed", seed, "seed_env")):
        if value is not None:
            raise ConfigError(f"{name}: '{setting}' must not be set in the pipeline config, which spaCy saves in clear "
                              f"to config.cfg; put it in an environment variable named by '{env}', or call "
                              f"nlp.get_pipe({name!r}).use_secrets({setting}=...) in code")
