"""id2label -> BIOES label scheme; transition biases.

CONTRACT (issue #2):
    LabelScheme.from_id2label(id2label: Sequence[str]) -> LabelScheme   (.classes, .num_labels, ...)
    TransitionBiases (frozen; six floats) with .from_any(None | Mapping | path-to-viterbi_calibration.json)
    BIAS_KEYS: the six transition_bias_* names
"""
