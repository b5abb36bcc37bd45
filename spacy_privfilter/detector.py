"""text -> CharSpans on one screen of code, without spaCy.

CONTRACT (issue #2/#3; the spaCy component codes against it):
    Detector(backend, *, biases=None, tokenizer=None, max_tokens=..., max_batch_tokens=...,
             threshold=0.0, label_thresholds=None)
    Detector.from_pretrained(model=DEFAULT_MODEL, *, revision=None, backend="auto", device="auto",
                             dtype="auto", **options) -> Detector
    Detector.detect(text) -> list[CharSpan]
    Detector.detect_batch(texts) -> list[list[CharSpan]]     same result as detect() one by one
"""
DEFAULT_MODEL = "OpenMed/privacy-filter-nemotron-mlx-8bit"
