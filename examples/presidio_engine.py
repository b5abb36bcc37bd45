"""Recipe: a spaCy pipeline with ``privacy_filter`` as Presidio's NLP engine.

Presidio's ``AnalyzerEngine`` runs a spaCy pipeline and turns ``doc.ents`` into ``RecognizerResult``s.
Here the pipeline is ``spacy.blank("en")`` + ``privacy_filter`` with ``set_ents=True`` and a ``label_map``
to Presidio's entity names, so Presidio gets the Privacy Filter's spans, with the model's own span scores
(from ``doc.spans["pii"].attrs["scores"]``) instead of Presidio's fixed default score.

    pip install ".[torch]" presidio-analyzer        # from a clone of this repository
    python examples/presidio_engine.py [MODEL]      # MODEL: Hub id or folder (default: the package default)
"""
from __future__ import annotations

import sys
from typing import Dict, List, Optional

import spacy
from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import SpacyRecognizer
from spacy.language import Language
from spacy.tokens import Doc

# Privacy Filter classes (Nemotron and base) -> Presidio entity names. Classes left out keep their own name.
PRESIDIO_LABELS: Dict[str, str] = {
    "first_name": "PERSON", "last_name": "PERSON", "private_person": "PERSON",
    "email": "EMAIL_ADDRESS", "private_email": "EMAIL_ADDRESS",
    "phone_number": "PHONE_NUMBER", "fax_number": "PHONE_NUMBER", "private_phone": "PHONE_NUMBER",
    "street_address": "LOCATION", "city": "LOCATION", "county": "LOCATION", "state": "LOCATION",
    "country": "LOCATION", "postcode": "LOCATION", "coordinate": "LOCATION", "private_address": "LOCATION",
    "date": "DATE_TIME", "date_of_birth": "DATE_TIME", "date_time": "DATE_TIME", "time": "DATE_TIME",
    "private_date": "DATE_TIME",
    "ssn": "US_SSN", "credit_debit_card": "CREDIT_CARD", "ipv4": "IP_ADDRESS", "ipv6": "IP_ADDRESS",
    "url": "URL", "private_url": "URL", "company_name": "ORGANIZATION", "age": "AGE",
    "race_ethnicity": "NRP", "religious_belief": "NRP", "political_view": "NRP",
}


def build_pipeline(model: Optional[str] = None, **config) -> Language:
    """``spacy.blank("en")`` + ``privacy_filter`` writing Presidio-named entities to ``doc.ents``."""
    settings = {"set_ents": True, "ents_policy": "replace", "label_map": PRESIDIO_LABELS, **config}
    if model is not None:
        settings["model"] = model
    nlp = spacy.blank("en")
    nlp.add_pipe("privacy_filter", config=settings)
    return nlp


class PrivacyFilterNlpEngine(SpacyNlpEngine):
    """Presidio ``SpacyNlpEngine`` around a built pipeline; entity scores are the model's span scores.

    Args:
        nlp: a pipeline with ``privacy_filter`` (``set_ents=True``).
        entities: the Presidio entity names the pipeline can emit.
        lang_code: Presidio language code of the pipeline.
        default_score: score of an entity missing from ``doc.spans[spans_key]`` (e.g. from another pipe).
    """

    def __init__(self, nlp: Language, *, entities: List[str], lang_code: str = "en",
                 default_score: float = 0.85) -> None:
        mapping = {name: name for name in entities}
        super().__init__(models=[{"lang_code": lang_code, "model_name": "privacy_filter"}],
                         ner_model_configuration=NerModelConfiguration(
                             model_to_presidio_entity_mapping=mapping, default_score=default_score))
        self.nlp = {lang_code: nlp}
        self.spans_key = nlp.get_pipe("privacy_filter").settings.spans_key

    def load(self) -> None:
        """Nothing to load: the pipeline was given (Presidio would ``spacy.load`` a package name)."""

    def _get_scores_for_entities(self, doc: Doc) -> List[float]:
        group = doc.spans.get(self.spans_key)
        by_span: Dict[tuple, float] = {}
        if group is not None:
            for span, score in zip(group, group.attrs.get("scores", ())):
                by_span[(span.start, span.end, span.label_)] = float(score)
        default = self.ner_model_configuration.default_score
        return [by_span.get((ent.start, ent.end, ent.label_), default) for ent in doc.ents]


def build_analyzer(nlp: Language, *, lang_code: str = "en",
                   with_pattern_recognizers: bool = False) -> AnalyzerEngine:
    """An ``AnalyzerEngine`` whose NER results come from ``privacy_filter``.

    Args:
        nlp: a pipeline from ``build_pipeline`` (or any with ``privacy_filter`` and ``set_ents=True``).
        with_pattern_recognizers: also load Presidio's predefined regex/checksum recognizers.
    """
    entities = sorted(set(PRESIDIO_LABELS.values()))
    engine = PrivacyFilterNlpEngine(nlp, entities=entities, lang_code=lang_code)
    registry = RecognizerRegistry(supported_languages=[lang_code])
    if with_pattern_recognizers:
        registry.load_predefined_recognizers(languages=[lang_code], nlp_engine=engine)
        registry.remove_recognizer("SpacyRecognizer")
    registry.add_recognizer(SpacyRecognizer(supported_language=lang_code, supported_entities=entities))
    return AnalyzerEngine(nlp_engine=engine, registry=registry, supported_languages=[lang_code])


def main(argv: List[str]) -> None:
    nlp = build_pipeline(argv[1] if len(argv) > 1 else None)
    analyzer = build_analyzer(nlp)
    text = "Patient Jane Doe (SSN 123-45-6789) can be reached at jane.doe@example.org or 555-201-7731."
    for result in analyzer.analyze(text=text, language="en"):
        print(result.entity_type, result.start, result.end, round(result.score, 3))


if __name__ == "__main__":
    main(sys.argv)
