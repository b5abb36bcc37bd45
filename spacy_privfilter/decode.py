"""Constrained BIOES Viterbi in vectorised numpy.

CONTRACT (issue #2):
    log_softmax(logits: float32 [T, C]) -> float32 [T, C]
    viterbi(log_probs: [T, C], scheme: LabelScheme, biases: TransitionBiases | None = None) -> int64 [T]
    tags_to_token_spans(tags, scheme) -> list[(class_name, token_start, token_end)]
"""
