"""The hash key and the surrogate seed never appear in config.cfg, saved files, progress files, reprs or messages;
every error path is provoked with marker secrets and all output is scanned. Weak keys are refused."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import spacy

from spacy_privfilter.cli.parser import main
from spacy_privfilter.errors import ConfigError
from spacy_privfilter.testing import bioes_labels, tiny_config, write_random_checkpoint

KEY = "MARKERKEY-7f3a9c2e51d0"
SEED = "MARKERSEED-b41d9e"
WEAK = "MARKWEAK"
MARKERS = ("MARKERKEY", "MARKERSEED", "MARKWEAK")


def clean(*texts) -> bool:
    return not any(marker in str(text) for text in texts for marker in MARKERS)


@pytest.fixture()
def secrets_env(monkeypatch):
    monkeypatch.setenv("PRIVFILTER_HASH_KEY", KEY)
    monkeypatch.setenv("PRIVFILTER_SURROGATE_SEED", SEED)


@pytest.mark.parametrize("config", [{"style": "hash", "hash_key": KEY}, {"style": "surrogate", "seed": SEED}])
def test_secrets_in_a_pipeline_config_are_refused_without_being_shown(config):
    with pytest.raises(ConfigError, match="environment variable") as info:
        spacy.blank("en").add_pipe("privacy_redactor", config=config)
    assert clean(str(info.value))


def test_env_secrets_stay_out_of_config_errors_saved_files_and_reprs(tmp_path, secrets_env):
    pytest.importorskip("faker")
    with pytest.raises(Exception) as info:  # spaCy prints the whole component config on a typo
        spacy.blank("en").add_pipe("privacy_redactor", config={"style": "hash", "hash_lenght": 9})
    assert "hash_lenght" in str(info.value) and clean(str(info.value))
    nlp = spacy.blank("en")
    component = nlp.add_pipe("privacy_redactor", config={"style": "surrogate", "label_styles": {"email": "hash"}})
    assert component.config.seed == SEED  # it was read...
    assert clean(nlp.config.to_str(), repr(component.config), repr(component.redactor.config))  # ...and not shown
    nlp.to_disk(tmp_path / "pipe")
    assert clean(*(p.read_bytes().decode("utf-8", "replace") for p in (tmp_path / "pipe").rglob("*") if p.is_file()))


def test_a_weak_key_is_refused_with_a_clear_error_that_does_not_show_it(monkeypatch):
    monkeypatch.setenv("PRIVFILTER_HASH_KEY", WEAK)
    with pytest.raises(ConfigError, match="at least 16") as info:
        spacy.blank("en").add_pipe("privacy_redactor", config={"style": "hash"})
    assert clean(str(info.value))
    from spacy_privfilter.redaction.redactor import redact_text

    with pytest.raises(ConfigError, match="8 byte"):
        redact_text("a b", [("x", 0, 1)], style="hash", hash_key=WEAK)
    monkeypatch.setenv("PRIVFILTER_HASH_KEY", "change-me")  # an example key from older docs
    with pytest.raises(ConfigError):
        spacy.blank("en").add_pipe("privacy_redactor", config={"style": "hash"})


def test_cli_secrets_stay_out_of_progress_files_and_messages(tmp_path, monkeypatch, capsys, secrets_env):
    pytest.importorskip("torch")
    pytest.importorskip("faker")
    config = tiny_config(id2label=bioes_labels(("first_name", "email")))
    model = write_random_checkpoint(tmp_path / "tiny", config, format="hf", seed=1, classifier_scale=8.0)
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": f"Anna {i} mail a{i}@x.org"}) + "\n" for i in range(6))
                    + "{not json\n")
    out = tmp_path / "o.jsonl"
    argv = ["redact", str(data), "-o", str(out), "--model", str(model), "--style", "surrogate", "--seed", SEED,
            "--label-style", "email=hash", "--batch-size", "2", "-vv"]

    def interrupted(nlp, items, outputs, progress, **kwargs):
        progress.save(2, {})
        raise KeyboardInterrupt

    monkeypatch.setattr("spacy_privfilter.cli.scrub.run", interrupted)
    assert main(argv) == 130
    progress = Path(f"{out}.progress.json").read_text()
    assert "fingerprint" in progress and clean(progress)
    monkeypatch.undo()
    monkeypatch.setenv("PRIVFILTER_HASH_KEY", KEY)
    assert main(argv) == 1  # the bad line is an input error; the rest is written
    monkeypatch.setenv("PRIVFILTER_HASH_KEY", WEAK)
    assert main(argv) == 2  # weak key: usage error
    monkeypatch.setenv("PRIVFILTER_HASH_KEY", KEY)
    assert main([*argv[:-1], "--hash-length", "99"]) == 2  # an invalid option next to the secrets
    captured = capsys.readouterr()
    assert "at least 16" in captured.err and "hash_length" in captured.err
    assert clean(captured.out, captured.err)
    assert clean(*(p.read_text("utf-8", "replace") for p in tmp_path.glob("*.json*")))
