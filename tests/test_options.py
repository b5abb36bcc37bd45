"""One Literal per option set: argparse choices, settings checks and factory signatures all come from it."""
from __future__ import annotations

import argparse
from typing import get_args

import pytest
import spacy
from thinc.api import ConfigValidationError

from spacy_privfilter.backends.base import Backend, DType
from spacy_privfilter.checkpoint import SAVE_FORMATS
from spacy_privfilter.checkpoint.types import SaveFormat
from spacy_privfilter.cli.inputs import Format
from spacy_privfilter.cli.parser import build_parser
from spacy_privfilter.errors import ConfigError
from spacy_privfilter.pipeline.settings import AlignmentMode, EntsPolicy, FilterSettings, SaveModel
from spacy_privfilter.redaction.redactor import RedactionConfig
from spacy_privfilter.redaction.values import Style


def choices(command: str, dest: str) -> tuple:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return tuple(next(a for a in sub._actions if a.dest == dest).choices)


@pytest.mark.parametrize("command, dest, literal", [
    ("redact", "backend", Backend), ("detect", "dtype", DType), ("detect", "alignment_mode", AlignmentMode),
    ("redact", "style", Style), ("redact", "format", Format), ("evaluate", "backend", Backend),
])
def test_cli_choices_are_the_literals(command, dest, literal):
    assert choices(command, dest) == get_args(literal)


def test_save_formats_are_the_literal():
    assert tuple(SAVE_FORMATS) == get_args(SaveFormat)
    assert set(choices("convert", "to")) < set(get_args(SaveFormat))


@pytest.mark.parametrize("key, literal", [("backend", Backend), ("dtype", DType), ("ents_policy", EntsPolicy),
                                          ("alignment_mode", AlignmentMode), ("save_model", SaveModel)])
def test_every_literal_value_is_accepted_and_a_typo_is_caught(key, literal):
    for value in get_args(literal):
        FilterSettings(model="m", **{key: value})
    with pytest.raises(ConfigError, match=key):
        FilterSettings(model="m", **{key: "typo"})
    # The factory signature carries the Literal, so spaCy itself rejects the typo in a config.
    with pytest.raises(ConfigValidationError, match=key):
        spacy.blank("en").add_pipe("privacy_filter", config={key: "typo"})


def test_styles_come_from_one_literal():
    for style in get_args(Style):
        assert RedactionConfig(style=style).style == style
    with pytest.raises(ConfigError, match="style must be one of tag, mask, hash, surrogate, remove"):
        RedactionConfig(style="blur")
    with pytest.raises(ConfigValidationError, match="style"):
        spacy.blank("en").add_pipe("privacy_redactor", config={"style": "blur"})
