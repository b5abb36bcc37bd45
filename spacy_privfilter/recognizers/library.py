"""The shipped recognizers, switched on by name (``recognizers = ["card", "iban"]``).

Labels are Nemotron-PII class names, so the spans merge with the model's; rename them with
``recognizer_labels`` (e.g. ``{"nhs": "medical_record_number"}``) for a model with other classes.

Regexes are loose on purpose and the validators decide: a 16-digit run is a card only if it passes Luhn.
``ssn`` needs separators (``123-45-6789`` or ``123 45 6789``): a bare 9-digit run is as likely an MRN or an
account number, and a validated pattern would outrank the model's label for it. ``nhs`` (10 digits in
3-3-4 groups, mod 11) also accepts about one US phone number in eleven, so switch it on for UK text only.
"""
from __future__ import annotations

from typing import Any, Dict, List, Literal, Mapping, Sequence, Tuple, get_args

from .._compat import require
from ..errors import ConfigError
from .patterns import PRIORITY_OTHER, Found, Pattern, pattern_source

RecognizerName = Literal["card", "iban", "ssn", "nhs", "email", "ipv4", "ipv6", "mac", "url", "phone"]
RECOGNIZERS: Tuple[str, ...] = get_args(RecognizerName)

# name -> (label, regex, validator, score)
_BUILTIN: Dict[str, Tuple[str, str, Any, float]] = {
    "card": ("credit_debit_card", r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])", "luhn", 1.0),
    "iban": ("account_number", r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b", "iban", 1.0),
    "ssn": ("ssn", r"(?<![\w-])\d{3}([- ])\d{2}\1\d{4}(?![\w-])", "us_ssn", 1.0),
    "nhs": ("national_id", r"(?<![\w-])\d{3}([- ]?)\d{3}\1\d{4}(?![\w-])", "nhs_number", 1.0),
    "email": ("email", r"(?<![\w.+-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}\b",
              None, 1.0),
    "ipv4": ("ipv4", r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)", "ipv4", 1.0),
    "ipv6": ("ipv6", r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:|:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3}|:)(?![\w:])",
             "ipv6", 1.0),
    "mac": ("mac_address", r"(?<![\w:-])(?:[0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}(?![\w:-])"
                           r"|(?<![\w.])[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}(?![\w.])", "mac_address", 1.0),
    # Trailing sentence punctuation is not part of a URL; a closing bracket only when it has its opener.
    "url": ("url", r"\b(?:https?://|www\.)[^\s<>\"']*[^\s<>\"'.,;:!?)\]]", None, 0.9),
}
PHONE_LABEL, PHONE_SCORE = "phone_number", 0.8


class PhoneFinder:
    """Phone numbers found by the ``phonenumbers`` library (valid numbers for any of ``regions``).

    Numbers written with a ``+`` country code are found whatever the region; ``regions`` decide how
    national numbers (``(020) 7946 0958``, ``555-201-7731``) are read.
    """

    def __init__(self, label: str = PHONE_LABEL, *, regions: Sequence[str] = ("US",), score: float = PHONE_SCORE):
        require("phonenumbers", "the 'phone' recognizer")
        import phonenumbers

        unknown = [r for r in regions if r.upper() not in phonenumbers.SUPPORTED_REGIONS]
        if unknown or not regions:
            raise ConfigError(f"phone_regions must list region codes such as US, GB, DE; unknown: "
                              f"{', '.join(map(repr, unknown)) or 'none given'}")
        self.label, self.score = label, score
        self.regions = tuple(r.upper() for r in regions)

    def find(self, text: str) -> List[Found]:
        import phonenumbers

        seen = set()
        found: List[Found] = []
        for region in self.regions:
            for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
                if (match.start, match.end) not in seen:
                    seen.add((match.start, match.end))
                    found.append(Found(self.label, match.start, match.end, self.score, pattern_source("phone"),
                                       PRIORITY_OTHER))
        return found


def check_names(names: Sequence[str]) -> List[str]:
    unknown = [n for n in names if n not in RECOGNIZERS]
    if unknown:
        raise ConfigError(f"unknown recognizer name(s) {', '.join(map(repr, unknown))}; choose from "
                          f"{', '.join(RECOGNIZERS)}")
    return list(dict.fromkeys(names))


def builtin_finders(names: Sequence[str], *, labels: Mapping[str, str] = {},
                    phone_regions: Sequence[str] = ("US",)) -> List[Any]:
    """Objects with ``find(text) -> list[Found]`` for the named recognizers (in the order given)."""
    names = check_names(names)
    stray = sorted(k for k in labels if k not in RECOGNIZERS)
    if stray:
        raise ConfigError(f"recognizer_labels names unknown recognizer(s) {', '.join(stray)}; choose from "
                          f"{', '.join(RECOGNIZERS)}")
    finders: List[Any] = []
    for name in names:
        if name == "phone":
            finders.append(PhoneFinder(labels.get(name, PHONE_LABEL), regions=phone_regions))
            continue
        label, regex, validator, score = _BUILTIN[name]
        finders.append(Pattern(labels.get(name, label), "regex", regex, name=name, score=score,
                               validator=validator))
    return finders
