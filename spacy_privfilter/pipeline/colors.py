"""displaCy label colours for the Privacy Filter classes (``spacy_displacy_colors`` entry point).

Covers the 55 Nemotron classes and the 8 base ``openai/privacy-filter`` classes. The colours were chosen
once, offline, as a max-min-distance set in CIELAB among light colours (contrast with displaCy's black
text >= 7.5:1, pairwise CIE76 distance >= 14), then sorted by hue so that related classes (names, places,
dates, contact details, identifiers, money, ...) get neighbouring hues.
"""
from typing import Dict, Mapping

DISPLACY_COLORS: Dict[str, str] = {
    # person
    "first_name": "#cf9181",
    "last_name": "#ffb68f",
    "user_name": "#ff9752",
    "age": "#f9e6d2",
    "gender": "#d5b690",
    "private_person": "#f7b96e",
    # time
    "date": "#ffc252",
    "date_of_birth": "#ffeab8",
    "date_time": "#dcc274",
    "time": "#ffdc52",
    "private_date": "#fff652",
    # work
    "company_name": "#fff98f",
    "occupation": "#cfe967",
    "education_level": "#dcff52",
    "employment_status": "#edffb8",
    # place
    "street_address": "#b4cf81",
    "city": "#d3e6bc",
    "county": "#baff66",
    "state": "#bfffa3",
    "country": "#89dc74",
    "postcode": "#7bf76e",
    "coordinate": "#52ff52",
    "private_address": "#bbfbc8",
    # secret
    "ipv4": "#7aff9c",
    "ipv6": "#74dc99",
    "mac_address": "#81cfa4",
    "api_key": "#52ffc2",
    "password": "#daf1e9",
    "http_cookie": "#bbfbe5",
    "secret": "#81cfc0",
    # contact
    "email": "#66ffe0",
    "phone_number": "#8fffff",
    "fax_number": "#81c0cf",
    "url": "#66e0ff",
    "private_email": "#b8eaff",
    "private_phone": "#7acaff",
    "private_url": "#52b1ff",
    # identifier
    "ssn": "#819dcf",
    "national_id": "#aebfe0",
    "certificate_license_number": "#8fabff",
    "medical_record_number": "#7a95ff",
    "health_plan_beneficiary_number": "#d6ccff",
    "customer_id": "#b6a5e9",
    "employee_id": "#bc8fff",
    "unique_id": "#eadaf1",
    "license_plate": "#de7aff",
    "vehicle_identifier": "#f6a3ff",
    "device_identifier": "#f652ff",
    "biometric_identifier": "#ff66f0",
    # sensitive
    "blood_type": "#ffccfa",
    "race_ethnicity": "#cf81c0",
    "religious_belief": "#ff7ae4",
    "political_view": "#f881c3",
    "sexuality": "#ffa3cd",
    "language": "#ff66a3",
    # money
    "account_number": "#db9fb4",
    "bank_routing_number": "#f76e82",
    "credit_debit_card": "#e08592",
    "cvv": "#ffa8a3",
    "swift_bic": "#e6bfbc",
    "tax_id": "#ff6c52",
    "pin": "#ff8e7a",
}

# Labels renamed by a component's ``label_map`` (e.g. ``first_name -> PERSON``), coloured like their source
# class; filled in when such a component is built, so displaCy colours what the pipeline actually writes.
MAPPED_COLORS: Dict[str, str] = {}


def register_mapped_colors(label_map: Mapping[str, str]) -> None:
    """Give each ``label_map`` target the colour of its (first) source class; never recolour a known class."""
    for source, target in label_map.items():
        color = DISPLACY_COLORS.get(source)
        if color is not None and target not in DISPLACY_COLORS:
            MAPPED_COLORS.setdefault(target, color)


def displacy_colors() -> Dict[str, str]:
    """The ``spacy_displacy_colors`` entry point: the class colours plus those of mapped labels."""
    return {**DISPLACY_COLORS, **MAPPED_COLORS}
