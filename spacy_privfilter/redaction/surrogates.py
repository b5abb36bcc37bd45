"""Realistic fake values ("surrogates") per PII class, with Faker.

Guarantees, for one document (one ``DocumentSurrogates``):
- the same value (case-folded, whitespace collapsed) of the same class always gets the same surrogate, and two
  different values never share one (so a surrogate can be mapped back);
- a surrogate never contains its original value (case-insensitive), and never contains, as a word, any PII value
  of the document or any part of one (a whitespace-separated piece of 2+ characters, other than the structural
  words in ``STRUCTURAL_WORDS``; dates and times, which move by the document's shift, are held to the whole-value
  rule only). A candidate that breaks a rule is redrawn: ``ATTEMPTS`` draws from the class generator, then
  ``ATTEMPTS`` shape-keeping draws (random letters and digits in the original's layout), then the class tag
  (``[PERSON]``), which contains nothing of the original;
- format is kept where it matters: emails stay emails, phone/card/ID numbers keep their digit and separator
  shape, dates and times keep their written form and move by one ``DateShift`` per document.
With a ``seed`` every choice is derived from HMAC(seed, class, value), so the same value gets the same surrogate
in every document and run; without one a random key is drawn per document.

All 55 Nemotron-PII classes have a generator; other labels go through ``ALIASES`` (``person``, ``address``, ...)
or get a shape-keeping generic surrogate. Faker is optional: ``pip install faker``.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re
import string
import threading
from typing import Any, Callable, Iterable

from .._compat import require
from .date_shift import DateShift
from ..errors import ConfigError
from .values import normalize_value

ATTEMPTS = 16
# Words that carry the shape of a value, not who it is: sharing them is not a leak ("Cook County" -> "Lee County").
STRUCTURAL_WORDS = frozenset({"county", "street", "st", "avenue", "ave", "road", "rd", "drive", "dr", "lane", "ln",
                              "boulevard", "blvd", "court", "ct", "suite", "apt", "mr", "mrs", "ms", "mx", "inc",
                              "llc", "ltd", "co", "corp", "and", "the", "of"})
# Classes whose surrogate is the original moved by the document's date shift: month names and years stay.
SHIFTED = frozenset({"date", "date_of_birth", "date_time", "time", "day_of_week"})
_WORD = re.compile(r"\w+")

CHOICES = {
    "blood_type": ("A+", "A-", "B+", "B-", "AB+", "AB-", "O+", "O-"),
    "gender": ("female", "male", "non-binary"),
    "education_level": ("high school diploma", "associate degree", "bachelor's degree", "master's degree",
                        "doctorate", "some college"),
    "employment_status": ("employed", "unemployed", "self-employed", "retired", "student", "part-time"),
    "political_view": ("liberal", "conservative", "moderate", "libertarian", "progressive", "independent"),
    "race_ethnicity": ("Asian", "Black", "White", "Hispanic", "Native American", "Pacific Islander",
                       "Middle Eastern", "Multiracial"),
    "religious_belief": ("Christian", "Muslim", "Jewish", "Hindu", "Buddhist", "Sikh", "atheist", "agnostic"),
    "sexuality": ("heterosexual", "gay", "lesbian", "bisexual", "asexual", "pansexual"),
    "prefix": ("Mr.", "Mrs.", "Ms.", "Dr.", "Mx."),
}

# Labels outside the 55 classes that have an obvious equivalent (lower-cased before lookup).
ALIASES = {
    "person": "person", "name": "person", "name_male": "person", "name_female": "person", "per": "person",
    "full_name": "person", "patient": "person", "doctor": "person", "given_name": "first_name",
    "surname": "last_name", "address": "address", "location": "city", "gpe": "city", "loc": "city",
    "organization": "company_name", "org": "company_name", "company": "company_name", "phone": "phone_number",
    "email_address": "email", "ip_address": "ipv4", "zip": "postcode", "zipcode": "postcode",
    "prefix_male": "prefix", "prefix_female": "prefix", "day_of_week": "day_of_week", "dob": "date_of_birth",
    "credit_card": "credit_debit_card", "credit_card_number": "credit_debit_card", "iban": "account_number",
    "username": "user_name", "social_security_number": "ssn", "mrn": "medical_record_number",
}

# Classes whose surrogate keeps the original's exact shape: digits -> digits, letters -> letters, rest kept.
SHAPED = ("account_number", "api_key", "bank_routing_number", "biometric_identifier", "certificate_license_number",
          "coordinate", "customer_id", "cvv", "device_identifier", "employee_id", "health_plan_beneficiary_number",
          "http_cookie", "license_plate", "mac_address", "medical_record_number", "national_id", "password", "pin",
          "postcode", "ssn", "swift_bic", "tax_id", "unique_id", "vehicle_identifier")


def surrogate_class(label: str) -> str:
    """The generator used for ``label``: a Nemotron class, an alias target, or ``"generic"``."""
    key = label.casefold()
    if key in GENERATORS:
        return key
    return ALIASES.get(key, "generic")


def reshape(value: str, rng: Any, *, first_digit_nonzero: bool = False) -> str:
    """Same shape, new characters: each digit -> random digit, each letter -> random letter of the same case
    (hex-looking values stay hex), everything else kept."""
    hex_like = all(ch in string.hexdigits or not ch.isalnum() for ch in value) and any(ch.isdigit() for ch in value)
    out = []
    for ch in value:
        if ch.isdigit():
            low = 1 if first_digit_nonzero and not any(c.isdigit() for c in out) else 0
            out.append(str(rng.randint(low, 9)))
        elif ch.isalpha() and ch.isascii():
            pool = "abcdef" if hex_like else string.ascii_lowercase
            letter = rng.choice(pool)
            out.append(letter.upper() if ch.isupper() else letter)
        elif ch.isalpha():
            out.append(rng.choice(string.ascii_uppercase if ch.isupper() else string.ascii_lowercase))
        else:
            out.append(ch)
    return "".join(out)


def _like_case(original: str, surrogate: str) -> str:
    """Follow the original's letter case when it is all upper or all lower case, or capitalised."""
    if not any(ch.isalpha() for ch in original):
        return surrogate
    if original.isupper():
        return surrogate.upper()
    if original.islower():
        return surrogate.lower()
    if original[:1].isupper() and surrogate[:1].islower():
        return surrogate[:1].upper() + surrogate[1:]
    return surrogate


def _luhn_fix(digits: str) -> str:
    """Replace the last digit so the number passes the Luhn check (card numbers look valid)."""
    total = 0
    for i, ch in enumerate(reversed(digits[:-1])):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return digits[:-1] + str((10 - total % 10) % 10)


def _phone(fake: Any, value: str, doc: "DocumentSurrogates") -> str:
    # Keep an international prefix such as "+1 " or "+44-": it says which country, not who.
    match = re.match(r"\+\d{1,3}(?=\D)", value)
    head = match.group() if match else ""
    return head + reshape(value[len(head):], fake.random, first_digit_nonzero=True)


def _card(fake: Any, value: str, doc: "DocumentSurrogates") -> str:
    shaped = reshape(value, fake.random, first_digit_nonzero=True)
    digits = "".join(ch for ch in shaped if ch.isdigit())
    if not 12 <= len(digits) <= 19:
        return shaped
    fixed = iter(_luhn_fix(digits))
    return "".join(next(fixed) if ch.isdigit() else ch for ch in shaped)


def _person(fake: Any, value: str, doc: "DocumentSurrogates") -> str:
    words = re.split(r"(\s+)", value.strip())
    several = sum(1 for w in words if w.strip()) > 1
    out = []
    for i, word in enumerate(words):
        if not word.strip():
            out.append(word)
            continue
        core = word.rstrip(".,")
        tail = word[len(core):]
        if len(core) <= 1:  # an initial stays an initial
            out.append(fake.random.choice(string.ascii_uppercase) + tail)
        else:
            out.append((fake.first_name() if i == 0 and several else fake.last_name()) + tail)
    return "".join(out)


def _date(fake: Any, value: str, doc: "DocumentSurrogates") -> str:
    shifted = doc.date_shift.shift(value)
    if shifted is not None:
        return shifted
    if any(ch.isdigit() for ch in value):
        return "".join(str(fake.random.randint(0, 9)) if ch.isdigit() else ch for ch in value)
    return fake.month_name()


def _age(fake: Any, value: str, doc: "DocumentSurrogates") -> str:
    if not value.strip().isdigit():
        return _generic(fake, value, doc)
    age = int(value)
    low, high = (90, 105) if age >= 90 else (max(1, age - 10), min(89, age + 10))  # 90+ stays in the 90+ band
    return str(fake.random.randint(low, high))


def _state(fake: Any, value: str, doc: "DocumentSurrogates") -> str:
    try:
        return fake.state_abbr() if len(value.strip()) <= 3 else fake.state()
    except AttributeError:  # locales without states
        return fake.city()


def _url(fake: Any, value: str, doc: "DocumentSurrogates") -> str:
    url = fake.url()
    return url if re.match(r"[a-z]+://", value, re.I) else re.sub(r"^[a-z]+://", "", url).rstrip("/")


def _address(fake: Any, value: str, doc: "DocumentSurrogates") -> str:
    address = fake.address()
    return address if "\n" in value else address.replace("\n", ", ")


def _generic(fake: Any, value: str, doc: "DocumentSurrogates") -> str:
    if any(ch.isdigit() for ch in value):
        return reshape(value, fake.random)
    return re.sub(r"[^\W\d_]+", lambda m: _like_case(m.group(), fake.word()), value)


def _choice(name: str) -> Callable[[Any, str, "DocumentSurrogates"], str]:
    return lambda fake, value, doc: fake.random.choice(CHOICES[name])


def _call(method: str) -> Callable[[Any, str, "DocumentSurrogates"], str]:
    return lambda fake, value, doc: getattr(fake, method)()


GENERATORS: dict[str, Callable[[Any, str, "DocumentSurrogates"], str]] = {
    **{name: (lambda fake, value, doc: reshape(value, fake.random)) for name in SHAPED},
    **{name: _choice(name) for name in CHOICES},
    "age": _age, "city": _call("city"), "company_name": _call("company"), "country": _call("country"),
    "county": lambda fake, value, doc: f"{fake.last_name()} County", "credit_debit_card": _card,
    "date": _date, "date_of_birth": _date, "date_time": _date, "time": _date, "email": _call("email"),
    "fax_number": _phone, "phone_number": _phone, "first_name": _call("first_name"),
    "last_name": _call("last_name"), "ipv4": _call("ipv4"), "ipv6": _call("ipv6"),
    "language": _call("language_name"), "occupation": _call("job"), "state": _state,
    "street_address": _call("street_address"), "url": _url, "user_name": _call("user_name"),
    "person": _person, "address": _address, "day_of_week": _call("day_of_week"), "generic": _generic,
}


class SurrogateFactory:
    """Holds one Faker instance; ``new_document()`` gives the per-document surrogate state.

    Args:
        locale: Faker locale, e.g. ``"en_US"``, ``"de_DE"``.
        seed: int or str; with it, surrogates and the date shift are the same in every document.
        max_shift_days: dates move by 1 to this many days, forwards or backwards.
    """

    def __init__(self, *, locale: str = "en_US", seed: int | str | None = None, max_shift_days: int = 365) -> None:
        require("faker", "style='surrogate'")
        from faker import Faker

        try:
            self.fake = Faker(locale)
        except AttributeError as exc:
            raise ConfigError(f"locale {locale!r} is not a Faker locale; examples: en_US, en_GB, de_DE, fr_FR") from exc
        self.max_shift_days = max_shift_days
        self.locale = locale
        self._local = threading.local()
        self._owner = threading.current_thread()
        self._seed_key = None
        if seed is not None:
            self._seed_key = hashlib.sha256(b"spacy-privfilter surrogates\x00" + str(seed).encode("utf-8")).digest()

    def new_document(self, values: Iterable[str] = ()) -> "DocumentSurrogates":
        """Surrogate state for one document; ``values``: every PII value in it (none may reappear in a surrogate).

        Each thread gets its own Faker: generation reseeds it per value, which two threads sharing one would undo.
        """
        fake = getattr(self._local, "fake", None)
        if fake is None:
            from faker import Faker

            fake = self._local.fake = self.fake if threading.current_thread() is self._owner else Faker(self.locale)
        return DocumentSurrogates(fake, self._seed_key or os.urandom(32), max_shift_days=self.max_shift_days,
                                  values=values)


class DocumentSurrogates:
    """Surrogates for one document: a memo (value -> surrogate), the set in use, and the document's date shift."""

    def __init__(self, fake: Any, key: bytes, *, max_shift_days: int = 365, values: Iterable[str] = ()) -> None:
        self.fake = fake
        self.key = key
        self.date_shift = DateShift.from_key(key, max_days=max_shift_days)
        self._memo: dict[tuple[str, str], str] = {}
        self._owner: dict[str, tuple[str, str]] = {}  # surrogate (case-folded) -> the value it stands for
        norms = {normalize_value(v) for v in values}
        self._whole = {" ".join(_WORD.findall(n)) for n in norms} - {""}  # each value as a run of words
        self._parts = {p for n in norms for p in (piece.strip(string.punctuation) for piece in n.split())
                       if len(p) >= 2 and p not in STRUCTURAL_WORDS}

    def surrogate(self, label: str, value: str) -> str:
        """The surrogate for ``value`` of class ``label`` (same input, same output within this document)."""
        name = surrogate_class(label)
        norm = normalize_value(value)
        base = self._memo.get((name, norm))
        if base is None:
            base = self._generate(name, value, norm)
            self._memo[(name, norm)] = base
            self._owner[normalize_value(base)] = (name, norm)
        return _like_case(value, base)

    def _acceptable(self, candidate: str, norm: str, name: str = "generic") -> bool:
        folded = normalize_value(candidate)
        if not folded or norm in folded or folded in self._owner:
            return False
        words = f" {' '.join(_WORD.findall(folded))} "
        if any(f" {whole} " in words for whole in self._whole):
            return False
        if name in SHIFTED:
            return True
        return not any(re.search(rf"(?<!\w){re.escape(part)}(?!\w)", folded) for part in self._parts)

    def _generate(self, name: str, value: str, norm: str) -> str:
        generator = GENERATORS[name]
        for attempt in range(ATTEMPTS):
            message = f"{name}\x00{norm}\x00{attempt}".encode("utf-8", "surrogatepass")  # lone surrogates too
            digest = hmac.new(self.key, message, hashlib.sha256).digest()
            self.fake.seed_instance(int.from_bytes(digest[:8], "big"))
            candidate = generator(self.fake, value, self)
            if self._acceptable(candidate, norm, name):
                return candidate
        for attempt in range(ATTEMPTS):  # the class generator keeps colliding (tiny choice lists): keep the shape
            candidate = reshape(value, self.fake.random) if any(ch.isalnum() for ch in value) else ""
            if self._acceptable(candidate, norm, "generic"):
                return candidate
        return f"[{name.upper()}]"  # a value with no letters or digits: nothing realistic to imitate
