"""Seeded workloads: realistic documents (clinical notes, emails) and token-exact inputs cut from them.

Documents are built from this module's own templates filled with Faker values, one paragraph at a
time, until a target length drawn log-uniformly from 100-2,000 tokens is reached. The same seed gives
the same texts on every machine, so runs are comparable.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

MIN_DOC_TOKENS = 100
MAX_DOC_TOKENS = 2000

_CLINICAL_HEAD = [
    "DISCHARGE SUMMARY\nPatient: {last}, {first}    MRN: {mrn}\nDOB: {dob}    Sex: {sex}\n"
    "Admission date: {date1}    Discharge date: {date2}\nAttending: Dr. {doctor}\n",
    "PROGRESS NOTE\nName: {first} {last}  |  Record no. {mrn}  |  Date of birth {dob}\n"
    "Seen on {date1} at {hospital}, {city}, {state}.\n",
    "REFERRAL LETTER\n{date1}\n\nDear Dr. {doctor},\n\nI am referring {first} {last} (DOB {dob}, MRN {mrn}), "
    "who lives at {address}, for further assessment.\n",
    "RADIOLOGY REPORT\nPatient ID {mrn}  {last}, {first}  Age {age}\nExam date {date1}  Ordering physician: "
    "Dr. {doctor}  Facility: {hospital}\n",
]
_CLINICAL_BODY = [
    "HISTORY: {first} {last} is a {age}-year-old {job} who presented with {symptom}. {pron} reports the "
    "symptoms began about {n} days before admission and worsened after a trip to {city}.",
    "MEDICATIONS: {drug} {dose} mg twice daily; {drug2} {dose2} mg at night. Allergies: {allergy}. "
    "Insurance member ID {member} with {company}.",
    "LABS ({date1}): sodium {na} mmol/L, potassium {k} mmol/L, creatinine {cr} mg/dL, hemoglobin {hb} g/dL, "
    "white cell count {wbc} x10^9/L. Repeat labs were drawn on {date2}.",
    "SOCIAL: Lives with {relation} {rel_first} {rel_last} at {address}. Works as a {job} at {company}. "
    "Emergency contact: {rel_first} {rel_last}, phone {phone}, email {email}.",
    "ASSESSMENT AND PLAN: Findings are consistent with {diagnosis}. Started {drug} and arranged follow-up "
    "with Dr. {doctor} at {hospital} on {date2}. If symptoms recur, call {phone} or write to {email}.",
    "IMAGING: CT of the chest on {date1} showed no acute abnormality. Compared with the study from {date2} "
    "performed at {hospital}, there is no interval change. Reviewed with Dr. {doctor}.",
    "DISPOSITION: Discharged home in stable condition. The patient's {relation}, {rel_first} {rel_last}, "
    "will drive {obj} home to {address}. Prescriptions sent to the pharmacy at {address2}.",
]
_EMAIL_HEAD = [
    "From: {first} {last} <{email}>\nTo: {rel_first} {rel_last} <{email2}>\nDate: {date1}\n"
    "Subject: {subject}\n\nHi {rel_first},\n",
    "From: {email}\nSent: {date1} 09:{minute}\nTo: billing@{domain}\nSubject: Re: {subject}\n\nHello,\n",
]
_EMAIL_BODY = [
    "Thanks for getting back to me so quickly. I checked with {company} and they confirmed the payment "
    "from account {iban} went through on {date2}. My card ending in {card4} was charged twice, though.",
    "Could you update my address to {address}? My new phone number is {phone}. I moved from {city} last "
    "month and the old letters are still going to {address2}.",
    "I will be travelling to {city}, {country} from {date1} to {date2}. If anything urgent comes up, "
    "please call my colleague {rel_first} {rel_last} on {phone2}.",
    "For the HR file: my employee number is {mrn}, date of birth {dob}, and my social security number is "
    "{ssn}. Please do not forward this email outside {company}.",
    "The meeting with {rel_first} from {company} moved to {date2}. The dial-in link is https://{domain}/"
    "meet/{mrn} and the office is at {address}.",
    "I logged in from {ip} yesterday and the account page for user {user} showed someone else's details. "
    "Can your IT team look at it before {date2}?",
]
_EMAIL_TAIL = ["\nBest regards,\n{first} {last}\n{job}, {company}\n{phone}\n",
               "\nThanks,\n{first}\n\n-----Original Message-----\nFrom: {rel_first} {rel_last} <{email2}>\n"]
_SYMPTOMS = ["chest pain radiating to the left arm", "shortness of breath on exertion", "a three-day fever",
             "sudden weakness of the right hand", "abdominal pain and vomiting", "a fall at home"]
_DIAGNOSES = ["community-acquired pneumonia", "unstable angina", "acute pancreatitis", "a transient ischemic "
              "attack", "cellulitis of the left leg", "an exacerbation of COPD"]
_DRUGS = ["metformin", "lisinopril", "atorvastatin", "amoxicillin", "apixaban", "furosemide", "sertraline"]


@dataclass(frozen=True)
class Workloads:
    """Everything the workers run.

    Attributes:
        documents: realistic texts (100-2,000 tokens each) for ``nlp.pipe``.
        stream_ids: a long token stream (the documents' ids joined) that single texts are cut from.
        short_texts: 32 texts of about 200 tokens each, run as one padded batch.
    """

    documents: list[str]
    stream_ids: list[int]
    short_texts: list[str]

    def single_ids(self, length: int) -> np.ndarray:
        """Exactly ``length`` real token ids (the stream repeats when it is shorter), shape [1, length]."""
        reps = math.ceil(length / len(self.stream_ids))
        return np.asarray((self.stream_ids * reps)[:length], dtype=np.int64)[None, :]

    def to_dict(self) -> dict:
        return {"documents": self.documents, "stream_ids": self.stream_ids, "short_texts": self.short_texts}

    @classmethod
    def from_dict(cls, data: dict) -> "Workloads":
        return cls(list(data["documents"]), [int(i) for i in data["stream_ids"]], list(data["short_texts"]))


def get_encoding():
    """tiktoken o200k_base (honours TIKTOKEN_CACHE_DIR)."""
    import tiktoken

    return tiktoken.get_encoding("o200k_base")


def count_tokens(encoding, text: str) -> int:
    return len(encoding.encode(text, disallowed_special=()))


def build_workloads(*, n_documents: int, seed: int = 0, stream_tokens: int = 40_000) -> Workloads:
    """Generate ``n_documents`` documents plus a token stream of at least ``stream_tokens`` ids."""
    encoding = get_encoding()
    rng = random.Random(seed)
    fake = _faker(seed)
    documents = [_document(rng, fake, encoding, _target_length(rng)) for _ in range(n_documents)]
    stream: list[int] = []
    pool = list(documents)
    while len(stream) < stream_tokens:
        if not pool:
            pool = [_document(rng, fake, encoding, MAX_DOC_TOKENS) for _ in range(4)]
        stream.extend(encoding.encode(pool.pop(0) + "\n\n", disallowed_special=()))
    short_texts = [_document(rng, fake, encoding, 200, exact=True) for _ in range(32)]
    return Workloads(documents, stream, short_texts)


def _target_length(rng: random.Random) -> int:
    return int(round(math.exp(rng.uniform(math.log(MIN_DOC_TOKENS), math.log(MAX_DOC_TOKENS)))))


def _document(rng: random.Random, fake, encoding, target: int, *, exact: bool = False) -> str:
    """Paragraphs from one template family until ``target`` tokens; ``exact`` trims to about ``target``."""
    clinical = rng.random() < 0.6
    head, body, tail = ((_CLINICAL_HEAD, _CLINICAL_BODY, None) if clinical
                        else (_EMAIL_HEAD, _EMAIL_BODY, _EMAIL_TAIL))
    parts = [_fill(rng.choice(head), _values(rng, fake))]
    total = count_tokens(encoding, parts[0])
    while total < target:
        paragraph = _fill(rng.choice(body), _values(rng, fake))
        total += count_tokens(encoding, paragraph) + 1
        parts.append(paragraph)
    if tail is not None:
        parts.append(_fill(rng.choice(tail), _values(rng, fake)))
    text = "\n".join(parts)
    if exact:
        ids = encoding.encode(text, disallowed_special=())[:target]
        text = encoding.decode(ids)
    return text


def _fill(template: str, values: dict[str, str]) -> str:
    return template.format(**values)


def _values(rng: random.Random, fake) -> dict[str, str]:
    female = rng.random() < 0.5
    return {
        "first": fake.first_name_female() if female else fake.first_name_male(), "last": fake.last_name(),
        "pron": "She" if female else "He", "obj": "her" if female else "him",
        "sex": "female" if female else "male",
        "mrn": str(rng.randint(10_000_000, 99_999_999)), "dob": fake.date_of_birth().strftime("%m/%d/%Y"),
        "date1": fake.date_this_decade().isoformat(), "date2": fake.date_this_year().strftime("%d %B %Y"),
        "doctor": fake.name(), "hospital": f"{fake.last_name()} Memorial Hospital", "city": fake.city(),
        "state": fake.state(), "country": fake.country(), "address": fake.address().replace("\n", ", "),
        "address2": fake.address().replace("\n", ", "), "age": str(rng.randint(18, 95)), "job": fake.job(),
        "symptom": rng.choice(_SYMPTOMS), "diagnosis": rng.choice(_DIAGNOSES), "n": str(rng.randint(2, 14)),
        "drug": rng.choice(_DRUGS), "drug2": rng.choice(_DRUGS),
        "dose": str(rng.choice([5, 10, 20, 40, 500])), "dose2": str(rng.choice([12.5, 25, 50, 100])),
        "allergy": rng.choice(["penicillin", "none known", "latex"]),
        "member": fake.bothify("???#########").upper(), "company": fake.company(),
        "na": str(rng.randint(128, 148)), "k": f"{rng.uniform(3.1, 5.6):.1f}",
        "cr": f"{rng.uniform(0.5, 2.4):.2f}",
        "hb": f"{rng.uniform(8, 17):.1f}", "wbc": f"{rng.uniform(3, 18):.1f}",
        "relation": rng.choice(["wife", "husband", "daughter", "son", "sister", "partner"]),
        "rel_first": fake.first_name(), "rel_last": fake.last_name(), "phone": fake.phone_number(),
        "phone2": fake.phone_number(), "email": fake.email(), "email2": fake.email(),
        "domain": fake.domain_name(),
        "subject": fake.sentence(nb_words=5).rstrip("."), "minute": f"{rng.randint(0, 59):02d}",
        "iban": fake.iban(), "card4": str(rng.randint(1000, 9999)), "ssn": fake.ssn(), "ip": fake.ipv4(),
        "user": fake.user_name(),
    }


def _faker(seed: int):
    from faker import Faker

    fake = Faker("en_US")
    fake.seed_instance(seed)
    return fake
