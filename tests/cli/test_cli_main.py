"""``cli.main`` in process (no spawn): usage errors, options passed to the components, evaluate, convert, info."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from spacy_privfilter.cli.parser import main
from spacy_privfilter.evaluate import Evaluation, annotated_labels

spacy = pytest.importorskip("spacy")
pytest.importorskip("torch")

TEXTS = ["Dear Zebulon Quackenbush, call 555-0100 or mail zq@example.com today.",
         "Patient Anna Smith (DOB 1984-10-28) was seen by Dr. Hines at 9:30."]
CLASSES = ("date", "email", "first_name", "last_name", "phone_number")


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint) -> Path:
    return tiny_checkpoint(CLASSES, seed=5, classifier_scale=8.0)


@pytest.fixture(scope="module")
def detector(checkpoint):
    nlp = spacy.blank("xx")
    nlp.add_pipe("privacy_filter", config={"model": str(checkpoint)})
    return nlp.get_pipe("privacy_filter").detector


def _pipeline(detector, checkpoint, **redactor):
    nlp = spacy.blank("xx")
    nlp.add_pipe("privacy_filter", config={"model": str(checkpoint)})
    nlp.get_pipe("privacy_filter").detector = detector
    nlp.add_pipe("privacy_redactor", config=redactor)
    return nlp


@pytest.mark.parametrize("argv, fragment", [
    (["redact", "{dir}"], "need -o FOLDER"),
    (["redact", "{file}", "--resume"], "--resume needs -o"),
    (["redact", "{file}", "-o", "{out}", "--label-style", "email"], "--label-style expects LABEL=VALUE"),
    (["redact", "{dir}", "-o", "{dir}/inside"], "inside the input folder"),
    (["redact", "{file}", "-o", "{file}"], "is also an input"),
    (["redact", "{file}", "-o", "{out}", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["detect", "{file}", "-o", "{dir}"], "writes one JSONL file"),
    (["evaluate", "{dir}/nope.jsonl", "--predictions", "{file}"], "no such data file"),
])
def test_usage_errors_exit_2_before_any_model_load(tmp_path, capsys, argv, fragment):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("hello")
    values = {"dir": str(tmp_path / "in"), "file": str(tmp_path / "in" / "a.txt"), "out": str(tmp_path / "o.txt")}
    argv = [a.format(**values) for a in argv] + ["--model", str(tmp_path / "no-model-needed")]
    assert main(argv) == 2
    assert fragment in capsys.readouterr().err
    assert not (tmp_path / "o.txt").exists()


def test_argparse_rejects_unknown_choices(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["redact", "-", "--style", "blur"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_missing_model_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("hello")
    assert main(["redact", str(tmp_path / "a.txt"), "--model", str(tmp_path / "nowhere")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_redaction_options_reach_the_redactor(tmp_path, monkeypatch, checkpoint, detector):
    monkeypatch.setenv("MY_HASH_KEY", "k3y-0123456789abcdef")
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"id": i, "body": t}) + "\n" for i, t in enumerate(TEXTS)))
    out = tmp_path / "o.jsonl"
    argv = ["redact", str(data), "-o", str(out), "--model", str(checkpoint), "--text-key", "body",
            "--style", "mask", "--keep-last", "2", "--label-style", "email=hash", "--hash-key-env", "MY_HASH_KEY",
            "--label-style", "date=remove", "--with-redactions", "-q"]
    assert main(argv) == 0
    nlp = _pipeline(detector, checkpoint, style="mask", keep_last=2, label_styles={"email": "hash", "date": "remove"},
                    hash_key_env="MY_HASH_KEY")
    docs = list(nlp.pipe(TEXTS))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["body"] for r in rows] == [doc._.redacted_text for doc in docs]
    assert [r["redactions"] for r in rows] == [doc._.redactions for doc in docs]
    assert all("original" not in rec for r in rows for rec in r["redactions"])
    assert {rec["label"] for r in rows for rec in r["redactions"]} & {"email", "date"}  # the overrides were used


def test_resume_of_a_finished_run_does_nothing(tmp_path, capsys, checkpoint):
    src = tmp_path / "a.txt"
    src.write_text(TEXTS[0])
    out = tmp_path / "a.out.txt"
    assert main(["redact", str(src), "-o", str(out), "--model", str(checkpoint)]) == 0
    first = out.read_bytes()
    assert "redacted 1 document(s)" in capsys.readouterr().err
    out.write_bytes(first + b"!")  # changed by hand: a no-op resume leaves it alone
    assert main(["redact", str(src), "-o", str(out), "--model", str(checkpoint), "--resume"]) == 0
    assert "nothing to resume" in capsys.readouterr().err and out.read_bytes() == first + b"!"


def test_evaluate_with_the_model_matches_scoring_the_pipeline_output(tmp_path, capsys, checkpoint, detector):
    gold = [[{"start": 5, "end": 12, "label": "first_name"}, {"start": 31, "end": 39, "label": "phone_number"}],
            [{"start": 8, "end": 12, "label": "first_name"}, {"start": 13, "end": 18, "label": "last_name"}]]
    data = tmp_path / "gold.jsonl"
    data.write_text("".join(json.dumps({"text": t, "spans": g, "source": "s"}) + "\n" for t, g in zip(TEXTS, gold)))
    assert main(["evaluate", str(data), "--model", str(checkpoint), "--json", "--ignore-unannotated-labels"]) == 0
    report = json.loads(capsys.readouterr().out)
    nlp = _pipeline(detector, checkpoint)
    records = [{"text": t, "spans": g, "source": "s"} for t, g in zip(TEXTS, gold)]
    expected = Evaluation(annotated=annotated_labels(records))
    for doc, spans in zip(nlp.pipe(TEXTS), gold):
        expected.add(doc.text, spans, [{"start": s.start_char, "end": s.end_char, "label": s.label_}
                                       for s in doc.spans["pii"]], source="s")
    assert report == json.loads(json.dumps(expected.as_dict()))
    assert report["n_ignored_predictions"] > 0  # email/date predictions: not annotated in this source


def test_convert_writes_an_mlx_8bit_checkpoint(tmp_path, capsys, checkpoint):
    from spacy_privfilter.checkpoint.discover import inspect_checkpoint

    dst = tmp_path / "mlx8"
    assert main(["convert", str(checkpoint), str(dst), "--to", "mlx-8bit"]) == 0
    info = inspect_checkpoint(dst)
    assert info.quantization is not None and info.quantization.bits == 8
    assert str(dst) in capsys.readouterr().err


def test_download_offline_names_the_repo(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert main(["download", "OpenMed/privacy-filter-nemotron"]) == 1
    err = capsys.readouterr().err
    assert "OpenMed/privacy-filter-nemotron" in err and "HF_HUB_OFFLINE" in err


def test_download_resolves_a_cached_repo_offline(tmp_path, monkeypatch, capsys, checkpoint):
    # the Hub cache layout: models--org--name/refs/main names the snapshot folder that holds the files
    repo = tmp_path / "models--acme--privacy-filter-tiny"
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).symlink_to(checkpoint / name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert main(["download", "acme/privacy-filter-tiny"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(snapshot)
    assert "2 file(s)" in captured.err


def test_info_json(tmp_path, monkeypatch, capsys):
    (tmp_path / "models--OpenMed--privacy-filter-nemotron").mkdir()
    (tmp_path / "models--someone--other-model").mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert main(["info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["backends"]["torch"] is True and data["backends"]["auto"] in ("torch", "mlx")
    assert "cpu" in data["devices"]["torch"] and data["packages"]["spacy"]
    assert data["hf_hub_cache"] == str(tmp_path)
    assert data["cached_models"] == ["OpenMed/privacy-filter-nemotron"]


def test_progress_bar_only_on_a_terminal(tmp_path, monkeypatch, capsys, checkpoint):
    src = tmp_path / "a.txt"
    src.write_text(TEXTS[1])
    assert main(["redact", str(src), "-o", str(tmp_path / "plain.txt"), "--model", str(checkpoint)]) == 0
    assert "doc/s" not in capsys.readouterr().err
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    assert main(["redact", str(src), "-o", str(tmp_path / "tty.txt"), "--model", str(checkpoint)]) == 0
    err = capsys.readouterr().err
    assert "doc/s" in err and "1/1" in err
    assert main(["redact", str(src), "-o", str(tmp_path / "quiet.txt"), "--model", str(checkpoint), "-q"]) == 0
    assert capsys.readouterr().err == ""


def test_renewing_the_pipeline_keeps_the_output(tmp_path, monkeypatch, checkpoint, detector):
    import spacy_privfilter.cli.stream as cli_run

    texts = [f"{TEXTS[i % 2]} unique{i}x{i * 7}" for i in range(9)]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    renewed = []
    original_run = cli_run.run

    def spy_run(nlp, *args, renew=None, **kwargs):
        def counting_renew():
            renewed.append(1)
            return renew()
        return original_run(nlp, *args, renew=counting_renew, **kwargs)

    monkeypatch.setattr(cli_run, "VOCAB_RENEW_LIMIT", 0)  # renew after every batch
    monkeypatch.setattr("spacy_privfilter.cli.scrub.run", spy_run)
    out = tmp_path / "o.jsonl"
    assert main(["redact", str(data), "-o", str(out), "--model", str(checkpoint), "--batch-size", "2", "-q"]) == 0
    assert len(renewed) == 5
    expected = [doc._.redacted_text for doc in _pipeline(detector, checkpoint).pipe(texts)]
    assert [json.loads(line)["text"] for line in out.read_text().splitlines()] == expected


def test_resume_with_other_options_is_refused(tmp_path, monkeypatch, capsys, checkpoint):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    out = tmp_path / "o.jsonl"
    argv = ["redact", str(data), "-o", str(out), "--model", str(checkpoint), "--style", "mask"]

    def interrupted(nlp, items, outputs, progress, **kwargs):
        progress.save(0, {})
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr("spacy_privfilter.cli.scrub.run", interrupted)
        assert main(argv) == 130
    assert "--resume" in capsys.readouterr().err
    assert main([*argv[:-1], "tag", "--resume"]) == 2
    assert "other inputs or options" in capsys.readouterr().err
    assert main([*argv, "--resume", "--batch-size", "1"]) == 0  # batch size does not change the output
    assert len(out.read_text().splitlines()) == len(TEXTS)


def test_main_leaves_the_host_logging_as_it_found_it(capsys):
    import logging

    package = logging.getLogger("spacy_privfilter")
    before = (package.handlers[:], package.level, package.propagate)
    assert main(["redact", "-", "--resume"]) == 2
    assert (package.handlers, package.level, package.propagate) == before


def test_detect_lines_jsonl_and_keep_mapping(tmp_path, capsys, checkpoint, detector):
    src = tmp_path / "notes.txt"
    src.write_text("\n".join(TEXTS) + "\n")
    assert main(["detect", str(src), "--format", "lines", "--model", str(checkpoint), "--with-text", "-q"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["file"], r["line"], r["text"]) for r in rows] == [(str(src), 1, TEXTS[0]), (str(src), 2, TEXTS[1])]
    for row, doc in zip(rows, _pipeline(detector, checkpoint).pipe(TEXTS)):
        assert [(s["start"], s["end"], s["label"], s["text"]) for s in row["spans"]] == \
            [(s.start_char, s.end_char, s.label_, s.text) for s in doc.spans["pii"]]

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    spans = tmp_path / "spans.jsonl"
    assert main(["detect", str(data), "-o", str(spans), "--model", str(checkpoint), "-q"]) == 0
    rows = [json.loads(line) for line in spans.read_text().splitlines()]
    assert [sorted(r) for r in rows] == [["id", "spans"]] * 2 and [r["id"] for r in rows] == [0, 1]
    for row, doc in zip(rows, _pipeline(detector, checkpoint).pipe(TEXTS)):
        group = doc.spans["pii"]
        assert [(s["start"], s["end"], s["label"]) for s in row["spans"]] == \
            [(s.start_char, s.end_char, s.label_) for s in group]
        assert [s["score"] for s in row["spans"]] == pytest.approx([float(x) for x in group.attrs["scores"]],
                                                                    abs=1e-5)

    data.write_text(json.dumps({"text": TEXTS[0]}) + "\n")
    out = tmp_path / "o.jsonl"
    argv = ["redact", str(data), "-o", str(out), "--model", str(checkpoint), "--with-redactions", "--keep-mapping"]
    assert main(argv) == 0
    from spacy_privfilter.redaction.redactor import restore

    row = json.loads(out.read_text())
    assert row["redactions"] and all("original" in r for r in row["redactions"])
    assert restore(row["text"], row["redactions"]) == TEXTS[0]
