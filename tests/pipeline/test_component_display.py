"""displaCy colours for the Privacy Filter classes, and the component's scorer on hand-made examples."""
from __future__ import annotations

import itertools
import json
import math

import pytest
import spacy
from spacy import displacy
from spacy.training import Example

from component_fakes import FixedDetector, make_nlp, span_at
from spacy_privfilter.pipeline.colors import DISPLACY_COLORS
from spacy_privfilter.testing import BASE_CLASSES, NEMOTRON_CLASSES


def _linear(channel: float) -> float:
    return channel / 12.92 if channel <= 0.04045 else ((channel + 0.055) / 1.055) ** 2.4


def _lab_and_luminance(color: str):
    """CIELAB (D65) and relative luminance of a #rrggbb colour, from the sRGB formulas."""
    r, g, b = (_linear(int(color[i:i + 2], 16) / 255) for i in (1, 3, 5))
    x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883

    def f(t):
        return t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116

    return (116 * f(y) - 16, 500 * (f(x) - f(y)), 200 * (f(y) - f(z))), y


def test_every_class_has_a_distinct_readable_colour():
    assert set(NEMOTRON_CLASSES) | set(BASE_CLASSES) == set(DISPLACY_COLORS)
    assert len(NEMOTRON_CLASSES) == 55 and len(BASE_CLASSES) == 8
    labs = {label: _lab_and_luminance(color) for label, color in DISPLACY_COLORS.items()}
    # Distinct: CIE76 distance between any two colours well above the ~2.3 just-noticeable difference.
    closest = min(math.dist(labs[a][0], labs[b][0]) for a, b in itertools.combinations(labs, 2))
    assert closest > 10
    # Readable: displaCy writes black text; WCAG contrast (L + 0.05) / 0.05 >= 7 (level AAA).
    assert min((y + 0.05) / 0.05 for _, y in labs.values()) >= 7


def test_span_render_uses_the_colours():
    text = "Mail Jane at jane@example.org about the 68779642 file."
    detector = FixedDetector({text: [span_at(text, "Jane", "first_name"),
                                     span_at(text, "jane@example.org", "email"),
                                     span_at(text, "68779642", "medical_record_number")]})
    doc = make_nlp(detector)(text)
    html = displacy.render(doc, style="span", options={"spans_key": "pii"})
    for label in ("first_name", "email", "medical_record_number"):
        assert DISPLACY_COLORS[label] in html
    # A label renamed with label_map takes the colour of its source class.
    html = displacy.render(make_nlp(detector, label_map={"first_name": "GIVEN_NAME_X"})(text), style="span",
                           options={"spans_key": "pii"})
    assert "GIVEN_NAME_X" in html and DISPLACY_COLORS["first_name"] in html and DISPLACY_COLORS["email"] in html


def test_mapped_labels_take_their_source_colour_without_recolouring_classes():
    from spacy.util import registry

    make_nlp(FixedDetector({}), label_map={"medical_record_number": "MRN_X", "email": "first_name"})
    colors = {}
    for entry in registry.displacy_colors.get_all().values():
        colors.update(entry() if callable(entry) else entry)
    assert colors["MRN_X"] == DISPLACY_COLORS["medical_record_number"]
    assert colors["first_name"] == DISPLACY_COLORS["first_name"]  # a class keeps its own colour


def test_ents_render_uses_the_colours():
    text = "Call 555 0100 now"
    doc = make_nlp(FixedDetector({text: [span_at(text, "555 0100", "phone_number")]}), set_ents=True)(text)
    assert DISPLACY_COLORS["phone_number"] in displacy.render(doc, style="ent")


def test_score_counts_spans_per_label():
    text = "Jane Doe wrote to amir@example.org on Monday."
    predicted = [span_at(text, "Jane", "first_name"), span_at(text, "Doe", "first_name"),
                 span_at(text, "amir@example.org", "email")]
    nlp = make_nlp(FixedDetector({text: predicted}))
    reference = nlp.make_doc(text)
    reference.spans["pii"] = [reference.char_span(0, 4, "first_name"), reference.char_span(5, 8, "last_name"),
                              reference.char_span(18, 34, "email")]
    no_annotation = Example(nlp.make_doc(text), nlp.make_doc(text))  # reference without the key: skipped
    scores = nlp.evaluate([Example(nlp.make_doc(text), reference), no_annotation])
    # tp = 2 (Jane, email), fp = 1 (Doe as first_name), fn = 1 (Doe as last_name)
    assert scores["spans_pii_p"] == pytest.approx(2 / 3)
    assert scores["spans_pii_r"] == pytest.approx(2 / 3)
    assert scores["spans_pii_per_type"]["first_name"] == pytest.approx({"p": 0.5, "r": 1.0, "f": 2 / 3})
    assert scores["spans_pii_per_type"]["last_name"]["r"] == 0.0
    assert "ents_f" not in scores  # set_ents is off


def test_score_weights_are_declared():
    nlp = spacy.blank("en")
    nlp.add_pipe("privacy_filter")
    weights = nlp.config["training"]["score_weights"]
    assert weights["spans_pii_f"] == 1.0
    assert json.loads(json.dumps(weights))  # plain values, serialisable in config.cfg
