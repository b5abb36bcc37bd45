"""Each shipped validator against published test vectors: valid numbers pass, near misses fail."""
from __future__ import annotations

import pytest

from spacy_privfilter.errors import ConfigError
from spacy_privfilter.recognizers import VALIDATORS, register_validator
from spacy_privfilter.recognizers.validators import (get_validator, iban, ipv4, ipv6, luhn, mac_address, nhs_number,
                                                     us_ssn)

# Card-network test numbers (Visa, Mastercard, Amex, Discover, Diners, JCB, 13-digit Visa), as printed.
CARDS = ["4111 1111 1111 1111", "5500-0055-5555-5559", "378282246310005", "6011111111111117", "30569309025904",
         "3530111333300000", "4222222222222", "4012888888881881"]
NOT_CARDS = ["4111 1111 1111 1112",  # last digit off by one
             "1234567812345678",     # Luhn sum 68
             "0000000000000000",     # passes Luhn, but a filler, not a number
             "411111111111",         # 12 digits
             "41111111111111111111"]  # 20 digits


# ISO 13616 / national examples, shortest (Norway, 15) to long (France with a letter in the BBAN).
IBANS = ["GB82WEST12345698765432", "GB82 WEST 1234 5698 7654 32", "DE89370400440532013000",
         "FR1420041010050500013M02606", "NL91ABNA0417164300", "BE68539007547034", "CH9300762011623852957",
         "NO9386011117947", "gb82west12345698765432"]
NOT_IBANS = ["GB82WEST12345698765433",   # check fails
             "GB28WEST12345698765432",   # check digits swapped
             "GB82WEST1234569876543",    # one character short for GB (22)
             "DE89370400440532013001",
             "1282WEST12345698765432"]   # no country code
SSNS = ["536-22-1234", "078-05-1121", "123 45 6789", "772-01-0001"]
NOT_SSNS = ["000-12-3456", "666-12-3456", "900-12-3456", "999-99-9999", "123-00-4567", "123-45-0000",
            "078-05-1120", "219-09-9999", "12-345-678"]  # impossible area/group/serial, advertising numbers
NHS = ["9434765919", "943 476 5919", "943-476-5919", "4010232137"]
NOT_NHS = ["9434765918", "9434765910", "943476591", "94347659190"]


def _cases(validator, good, bad):
    return [(validator, v, True) for v in good] + [(validator, v, False) for v in bad]


@pytest.mark.parametrize("validator, value, valid", _cases(luhn, CARDS, NOT_CARDS) + _cases(iban, IBANS, NOT_IBANS)
                         + _cases(us_ssn, SSNS, NOT_SSNS) + _cases(nhs_number, NHS, NOT_NHS))
def test_checksums(validator, value, valid):
    assert validator(value) is valid


def test_nhs_check_digit_ten_is_never_valid():
    # First nine digits 000000006: 6 x 2 = 12, 12 mod 11 = 1, so the check digit would be 10: no number is valid.
    assert not any(nhs_number(f"000000006{d}") for d in range(10))


@pytest.mark.parametrize("value,valid", [("192.168.0.1", True), ("8.8.8.8", True), ("255.255.255.255", True),
                                         ("256.1.1.1", False), ("1.2.3", False), ("01.2.3.4", False)])
def test_ipv4(value, valid):
    assert ipv4(value) is valid


@pytest.mark.parametrize("value,valid", [("2001:db8::1", True), ("::1", True), ("fe80::1ff:fe23:4567:890a", True),
                                         ("2001:0db8:85a3:0000:0000:8a2e:0370:7334", True), ("12:30:45", False),
                                         ("2001:db8::g1", False), ("::", False), ("1:2:3:4:5:6:7:8:9", False)])
def test_ipv6(value, valid):
    assert ipv6(value) is valid


@pytest.mark.parametrize("value,valid", [("00:1A:2B:3C:4D:5E", True), ("00-1a-2b-3c-4d-5e", True),
                                         ("001a.2b3c.4d5e", True), ("00:1A-2B:3C:4D:5E", False),
                                         ("00:1A:2B:3C:4D", False), ("GG:1A:2B:3C:4D:5E", False)])
def test_mac(value, valid):
    assert mac_address(value) is valid


def test_custom_validator_registration_and_unknown_names():
    @register_validator("even_digits_test")
    def even(text):
        return sum(map(int, filter(str.isdigit, text))) % 2 == 0

    try:
        assert get_validator("even_digits_test")("1-1") and not get_validator("even_digits_test")("1-2")
    finally:
        del VALIDATORS["even_digits_test"]
    with pytest.raises(ConfigError, match="unknown validator 'nope'.*luhn"):
        get_validator("nope")
