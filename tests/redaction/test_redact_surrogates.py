"""Surrogates: every Nemotron class, format preservation, consistency, date shifting, missing Faker."""
import datetime as dt
import json
import re
from pathlib import Path

import pytest

from spacy_privfilter import _compat
from spacy_privfilter.redaction.date_shift import DateShift
from spacy_privfilter.errors import BackendUnavailableError, ConfigError
from spacy_privfilter.redaction.redactor import redact_text
from spacy_privfilter.redaction.surrogates import GENERATORS, SurrogateFactory, surrogate_class

ID2LABEL = Path(__file__).resolve().parents[3] / "shared" / "research" / "id2label-nemotron.json"
FALLBACK_CLASSES = ["first_name", "last_name", "email", "phone_number", "date", "ssn"]

EXAMPLES = {
    "account_number": "GB29NWBK60161331926819", "age": "54", "api_key": "sk_live_4f9a8c7d2e1b",
    "bank_routing_number": "021000021", "biometric_identifier": "FP-88213-X", "blood_type": "AB+",
    "certificate_license_number": "MD-448812", "city": "Springfield", "company_name": "Acme Holdings",
    "coordinate": "40.7128, -74.0060", "country": "Portugal", "county": "Orange County",
    "credit_debit_card": "4111 1111 1111 1111", "customer_id": "CUST-00912", "cvv": "382",
    "date": "February 5, 2022", "date_of_birth": "10/28/1984", "date_time": "1993-01-04 14:56:41",
    "device_identifier": "PM-7781-2231", "education_level": "master's degree", "email": "clarence.cobb@mail.com",
    "employee_id": "E-55120", "employment_status": "retired", "fax_number": "(944) 418-1283",
    "first_name": "Clarence", "gender": "Female", "health_plan_beneficiary_number": "HPB-9921-331",
    "http_cookie": "sessionid=8f7a6b5c4d", "ipv4": "192.168.10.4", "ipv6": "2001:db8::8a2e:370:7334",
    "language": "Portuguese", "last_name": "Cobb", "license_plate": "7ABC123", "mac_address": "9e:69:18:cf:ca:2f",
    "medical_record_number": "68779642", "national_id": "AB123456C", "occupation": "electrician",
    "password": "hunter2!", "phone_number": "+1 632 971 0780", "pin": "4821", "political_view": "conservative",
    "postcode": "56139", "race_ethnicity": "Hispanic", "religious_belief": "Buddhist", "sexuality": "bisexual",
    "ssn": "123-45-6789", "state": "CA", "street_address": "8820 Amanda Divide", "swift_bic": "DEUTDEFF",
    "tax_id": "12-3456789", "time": "9:30 AM", "unique_id": "UID-7731-AA", "url": "https://www.cobb-family.net",
    "user_name": "ccobb84", "vehicle_identifier": "1HGCM82633A004352",
}


def _shape(value: str) -> str:
    return re.sub(r"[A-Za-z]", "a", re.sub(r"\d", "9", value))


def surrogate_of(label: str, value: str, **options) -> str:
    text = f"x {value} y"
    return redact_text(text, [(label, 2, 2 + len(value))], style="surrogate", **options).redacted_text[2:-2]


def test_examples_cover_the_55_nemotron_classes():
    classes = json.loads(ID2LABEL.read_text())["categories"] if ID2LABEL.is_file() else list(EXAMPLES)
    assert len(classes) == 55
    assert set(classes) == set(EXAMPLES)
    assert all(surrogate_class(name) == name for name in classes)
    assert set(classes) <= set(GENERATORS)


@pytest.mark.parametrize("label", sorted(EXAMPLES))
def test_every_class_gets_a_different_nonempty_surrogate(label):
    value = EXAMPLES[label]
    out = surrogate_of(label, value, seed=11)
    assert out and value.casefold() not in out.casefold()
    assert out == surrogate_of(label, value, seed=11)


def test_format_preserving_classes():
    assert re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]+", surrogate_of("email", EXAMPLES["email"], seed=1))
    phone = surrogate_of("phone_number", "+1 632 971 0780", seed=1)
    assert phone.startswith("+1 ") and _shape(phone) == _shape("+1 632 971 0780")
    for label in ("ssn", "medical_record_number", "postcode", "fax_number", "license_plate", "tax_id"):
        assert _shape(surrogate_of(label, EXAMPLES[label], seed=1)) == _shape(EXAMPLES[label])
    card = surrogate_of("credit_debit_card", "4111 1111 1111 1111", seed=1)
    digits = [int(d) for d in card if d.isdigit()]
    assert _shape(card) == "9999 9999 9999 9999"
    checksum = sum(d if i % 2 == 0 else (2 * d - 9 if 2 * d > 9 else 2 * d) for i, d in enumerate(reversed(digits)))
    assert checksum % 10 == 0  # Luhn-valid like a real card number
    assert re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", surrogate_of("mac_address", EXAMPLES["mac_address"], seed=1))
    assert surrogate_of("age", "54", seed=1).isdigit()
    assert surrogate_of("blood_type", "AB+", seed=1) in ("A+", "A-", "B+", "B-", "AB-", "O+", "O-")


def test_dates_stay_dates_and_shift_consistently_within_a_document():
    text = "Admitted 03/01/2024, discharged 03/11/2024."
    spans = [("date", 9, 19), ("date", 32, 42)]
    out = redact_text(text, spans, style="surrogate").redacted_text
    first, second = re.findall(r"\d\d/\d\d/\d{4}", out)
    parse = lambda s: dt.datetime.strptime(s, "%m/%d/%Y")  # noqa: E731
    assert (parse(second) - parse(first)).days == 10  # the interval between the two dates is kept
    assert parse(first) != parse("03/01/2024")


def test_case_and_whitespace_variants_get_the_same_surrogate():
    text = "Cobb said COBB and  cobb."
    out = redact_text(text, [("last_name", 0, 4), ("last_name", 10, 14), ("last_name", 20, 24)],
                      style="surrogate").redactions
    surname = out[0]["replacement"]
    assert [r["replacement"] for r in out] == [surname, surname.upper(), surname.lower()]


def test_different_values_never_share_a_surrogate():
    genders = ["female", "male", "woman", "man", "f", "m", "nonbinary"]
    text = " ".join(genders)
    spans, pos = [], 0
    for word in genders:
        spans.append(("gender", pos, pos + len(word)))
        pos += len(word) + 1
    outs = [r["replacement"].casefold() for r in redact_text(text, spans, style="surrogate").redactions]
    assert len(set(outs)) == len(genders)


def test_without_seed_documents_differ_with_seed_they_match():
    value = "4111 1111 1111 1111"
    unseeded = {surrogate_of("credit_debit_card", value) for _ in range(3)}
    assert len(unseeded) == 3
    assert surrogate_of("credit_debit_card", value, seed="a") == surrogate_of("credit_debit_card", value, seed="a")
    assert surrogate_of("credit_debit_card", value, seed="a") != surrogate_of("credit_debit_card", value, seed="b")


def test_other_labels_use_aliases_or_a_shape_keeping_fallback():
    assert surrogate_class("PERSON") == "person" and surrogate_class("address") == "address"
    assert surrogate_class("GEOGRAPHIC_LOCATION") == "generic"
    person = surrogate_of("NAME", "Anna S.", seed=2)
    assert re.fullmatch(r"[A-Z][a-z]+ [A-Z]\.", person) and person != "Anna S."
    generic = surrogate_of("ticket", "TK-4471", seed=2)
    assert _shape(generic) == _shape("TK-4471") and generic != "TK-4471"


def test_locale_and_bad_locale():
    assert surrogate_of("first_name", "Clarence", locale="de_DE", seed=1)
    with pytest.raises(ConfigError, match="locale"):
        SurrogateFactory(locale="xx_NOPE")


def test_missing_faker_names_the_pip_install(monkeypatch):
    monkeypatch.setattr(_compat, "_importable", lambda name: name != "faker")
    with pytest.raises(BackendUnavailableError, match=r"Fix: pip install faker"):
        redact_text("Cobb", [("last_name", 0, 4)], style="surrogate")
    assert redact_text("Cobb", [("last_name", 0, 4)], style="tag").redacted_text == "[LAST_NAME]"


@pytest.mark.parametrize("value,expected", [
    ("10/28/1984", "11/07/1984"), ("9/9/1999", "9/19/1999"), ("2026-09-05", "2026-09-15"),
    ("July 15th, 2023", "July 25th, 2023"), ("Jan 1st 2020", "Jan 11th 2020"), ("5 Mar 2021", "15 Mar 2021"),
    ("Monday, March 2, 2020", "Thursday, March 12, 2020"), ("12/31/2020 23:30", "01/11/2021 01:00"),
    ("9:30 AM", "11:00 AM"), ("11:45 pm", "1:15 am"), ("14:56", "16:26"), ("25/12/2020", "04/01/2021"),
    ("FEBRUARY 25, 2022", "MARCH 7, 2022"),
])
def test_date_shift_keeps_the_written_form(value, expected):
    assert DateShift(days=10, minutes=90).shift(value) == expected


@pytest.mark.parametrize("value", ["hello", "2022", "31/31/2020", "99:99"])
def test_date_shift_returns_none_for_non_dates(value):
    assert DateShift(days=10, minutes=90).shift(value) is None


def test_date_shift_from_key_is_stable_and_nonzero():
    shifts = [DateShift.from_key(bytes([i])) for i in range(50)]
    assert all(s.days != 0 and 0 < s.minutes < 1440 and abs(s.days) <= 365 for s in shifts)
    assert DateShift.from_key(b"k") == DateShift.from_key(b"k")
    assert len({s.days for s in shifts}) > 10
