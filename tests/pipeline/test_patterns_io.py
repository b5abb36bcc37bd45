"""privacy_patterns save/load: patterns and lists travel in the pipeline folder (never in config.cfg), load
offline in a fresh process with identical spans, and can come from JSONL files through [initialize]."""
from __future__ import annotations

import json

import pytest
import spacy
import srsly

from test_component_io import build, run_fresh, tiny_model  # noqa: F401  (fixture)
from spacy_privfilter.errors import CheckpointError

pytest.importorskip("torch")

TEXTS = ["Jane Doe, MRN 40-12345, card 4111 1111 1111 1111, mail jane.doe@example.org, at Riverside Clinic.",
         "Project Zebra: ring +44 20 7946 0958 about study ST-12 and PROJECT ZEBRA.", ""]
PATTERNS = [{"label": "medical_record_number", "regex": r"\bMRN\s*(?P<value>\d{2}-\d{5})\b", "id": "mrn"},
            {"label": "unique_id", "pattern": [{"LOWER": "study"}, {"TEXT": {"REGEX": r"^ST-\d+$"}}], "id": "study"},
            {"label": "company_name", "pattern": "Riverside Clinic", "score": 0.75}]
DENY = [{"term": "Project Zebra", "label": "company_name", "ignore_case": True}]
ALLOW = [{"term": "Riverside Clinic"}, {"regex": r"jane\.doe@example\.org"}]

CHILD = """
import json, sys
import spacy
nlp = spacy.load(sys.argv[1])
out = []
for doc in nlp.pipe(json.loads(sys.argv[2])):
    g = doc.spans["pii"]
    out.append({"spans": [[s.label_, s.start_char, s.end_char] for s in g],
                "scores": [round(float(x), 5) for x in g.attrs["scores"]], "sources": list(g.attrs["sources"]),
                "allowed": g.attrs["allowed"], "redacted": doc._.redacted_text})
print(json.dumps(out))
"""


def annotate(nlp):
    out = []
    for doc in nlp.pipe(TEXTS):
        g = doc.spans["pii"]
        out.append({"spans": [[s.label_, s.start_char, s.end_char] for s in g],
                    "scores": [round(float(x), 5) for x in g.attrs["scores"]], "sources": list(g.attrs["sources"]),
                    "allowed": g.attrs["allowed"], "redacted": doc._.redacted_text})
    return out


def full_pipeline(model):
    nlp = build(model)
    patterns = nlp.add_pipe("privacy_patterns", config={"recognizers": ["card", "email", "phone"],
                                                         "phone_regions": ["GB"]})
    patterns.add_patterns(PATTERNS)
    patterns.add_deny(DENY)
    patterns.add_allow(ALLOW)
    nlp.add_pipe("privacy_redactor")
    return nlp


def test_saved_pipeline_loads_offline_in_a_fresh_process_with_identical_spans(tiny_model, tmp_path):
    nlp = full_pipeline(tiny_model)
    expected = annotate(nlp)
    sources = {s for doc in expected for s in doc["sources"]}
    assert {"pattern:mrn", "pattern:study", "pattern:card", "pattern:phone", "deny"} <= sources
    assert expected[0]["allowed"] >= 2  # the email and the clinic phrase match the allow list
    nlp.to_disk(tmp_path / "pipeline")
    folder = tmp_path / "pipeline" / "privacy_patterns"
    assert list(srsly.read_jsonl(folder / "deny.jsonl")) == DENY
    assert list(srsly.read_jsonl(folder / "allow.jsonl")) == ALLOW
    assert list(srsly.read_jsonl(folder / "patterns.jsonl")) == PATTERNS
    assert "Zebra" not in (tmp_path / "pipeline" / "config.cfg").read_text()  # lists stay out of the config
    (tmp_path / "empty").mkdir()
    got = run_fresh([str(tmp_path / "pipeline"), json.dumps(TEXTS)], code=CHILD,
                    env_extra={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "no_hf_home"),
                               "TIKTOKEN_CACHE_DIR": str(tmp_path / "empty")})
    assert got == expected


def test_bytes_round_trip_and_unknown_versions(tiny_model):
    nlp = full_pipeline(tiny_model)
    other = spacy.blank("en")
    component = other.add_pipe("privacy_patterns")
    component.from_bytes(nlp.get_pipe("privacy_patterns").to_bytes())
    assert (component.patterns, component.deny, component.allow) == (PATTERNS, DENY, ALLOW)
    bad = srsly.msgpack_dumps({"cfg": {"version": 99}})
    with pytest.raises(CheckpointError, match="unknown format.*version 99"):
        component.from_bytes(bad)


def test_patterns_and_lists_from_jsonl_files_through_initialize(tmp_path):
    # Scores that binary floats hold exactly: srsly's JSON reader gives 0.6000000000000001 for 0.6.
    for name, rows in (("patterns", PATTERNS), ("deny", DENY), ("allow", ALLOW)):
        srsly.write_jsonl(tmp_path / f"{name}.jsonl", rows)
    config = spacy.util.load_config_from_str(f"""
[nlp]
lang = "en"
pipeline = ["privacy_patterns"]

[components]

[components.privacy_patterns]
factory = "privacy_patterns"
recognizers = ["card"]

[initialize]

[initialize.components]

[initialize.components.privacy_patterns]

[initialize.components.privacy_patterns.patterns]
@readers = "srsly.read_jsonl.v1"
path = "{tmp_path / 'patterns.jsonl'}"

[initialize.components.privacy_patterns.deny]
@readers = "srsly.read_jsonl.v1"
path = "{tmp_path / 'deny.jsonl'}"
""")
    nlp = spacy.util.load_model_from_config(config, auto_fill=True)
    component = nlp.get_pipe("privacy_patterns")
    component.add_allow(ALLOW)
    nlp.initialize()
    assert (component.patterns, component.deny, component.allow) == (PATTERNS, DENY, ALLOW)  # allow kept
    doc = nlp(TEXTS[1])
    assert [(s.text, src) for s, src in zip(doc.spans["pii"], doc.spans["pii"].attrs["sources"])] == \
        [("Project Zebra", "deny"), ("study ST-12", "pattern:study"), ("PROJECT ZEBRA", "deny")]
