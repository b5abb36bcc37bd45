"""Checks that turn a pattern match into a validated identifier: checksums and structural rules.

Each validator takes the matched text and returns True when it is a well-formed identifier of its kind.
Separators (spaces, hyphens) are the caller's business: the validators skip them where the format allows.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Callable, Dict

from ..errors import ConfigError

Validator = Callable[[str], bool]

_NON_DIGITS = re.compile(r"\D")

# IBAN length per country (ISO 13616 registry). A country missing here is checked by mod 97 and the
# general 15-34 length only.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}


def luhn(text: str) -> bool:
    """Payment card number: 13-19 digits passing the Luhn checksum (not all one digit)."""
    digits = _NON_DIGITS.sub("", text)
    if not 13 <= len(digits) <= 19 or len(set(digits)) == 1:
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban(text: str) -> bool:
    """IBAN: country code, check digits, the country's length, and the ISO 7064 mod 97 remainder 1."""
    value = re.sub(r"[\s-]", "", text).upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", value):
        return False
    if IBAN_LENGTHS.get(value[:2], len(value)) != len(value):
        return False
    rearranged = value[4:] + value[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def us_ssn(text: str) -> bool:
    """US Social Security number: 9 digits; area not 000, 666 or 9xx; group not 00; serial not 0000.

    The two numbers published in advertising (078-05-1120 and 219-09-9999) are rejected too.
    """
    digits = _NON_DIGITS.sub("", text)
    if len(digits) != 9 or digits in ("078051120", "219099999"):
        return False
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and not area.startswith("9") and group != "00" and serial != "0000"


def nhs_number(text: str) -> bool:
    """UK NHS number: 10 digits whose last is the mod 11 check digit of the first nine (weights 10..2)."""
    digits = _NON_DIGITS.sub("", text)
    if len(digits) != 10:
        return False
    remainder = sum(int(d) * w for d, w in zip(digits[:9], range(10, 1, -1))) % 11
    check = 11 - remainder
    if check == 11:
        check = 0
    return check != 10 and check == int(digits[9])


def ipv4(text: str) -> bool:
    """Dotted-quad IPv4 address (each part 0-255, no leading zeros)."""
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def ipv6(text: str) -> bool:
    """IPv6 address in any standard notation, with at least one non-zero group (``::`` alone is not kept)."""
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return int(address) != 0


def mac_address(text: str) -> bool:
    """MAC-48 address: six hex pairs with one separator (``:`` or ``-``), or three dotted groups of four."""
    return bool(re.fullmatch(r"[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(?:\1[0-9A-Fa-f]{2}){4}", text)
                or re.fullmatch(r"[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}", text))


VALIDATORS: Dict[str, Validator] = {
    "luhn": luhn, "iban": iban, "us_ssn": us_ssn, "nhs_number": nhs_number, "ipv4": ipv4, "ipv6": ipv6,
    "mac_address": mac_address,
}


def register_validator(name: str) -> Callable[[Validator], Validator]:
    """Decorator: make a function available to patterns as ``"validator": name``.

    Register it in every process that loads a pipeline naming it (as with spaCy's registered functions).
    """
    def wrap(func: Validator) -> Validator:
        VALIDATORS[name] = func
        return func
    return wrap


def get_validator(name: str) -> Validator:
    try:
        return VALIDATORS[name]
    except KeyError:
        raise ConfigError(f"unknown validator {name!r}; known: {', '.join(sorted(VALIDATORS))}. Fix: use one of "
                          f"those or register yours with spacy_privfilter.recognizers.register_validator") from None
