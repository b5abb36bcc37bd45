"""No data loss from the command line: outputs never reach inputs, bad lines stay per-line errors, resume checks
that its inputs are the ones it started on, stale outputs do not survive, writes are synced before they count."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from spacy_privfilter.cli.inputs import discover, iter_items
from spacy_privfilter.cli.outputs import Outputs, write_atomic
from spacy_privfilter.cli.parser import main
from spacy_privfilter.testing import bioes_labels, tiny_config, write_random_checkpoint

spacy = pytest.importorskip("spacy")
pytest.importorskip("torch")

TEXTS = ["Dear Zebulon Quackenbush, call 555-0100 or mail zq@example.com today.",
         "Patient Anna Smith (DOB 1984-10-28) was seen by Dr. Hines at 9:30.",
         "Nothing personal here.", "Write to ada@example.org on Monday."]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    config = tiny_config(id2label=bioes_labels(("date", "email", "first_name", "last_name", "phone_number")))
    return write_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", config, format="hf", seed=5,
                                   classifier_scale=8.0)


def jsonl(path: Path, texts) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def interrupt_after(monkeypatch, positions: int) -> None:
    """The next run stops (as on Ctrl-C) when the stream reaches input position ``positions`` + 1."""
    from spacy_privfilter.cli import stream

    real = stream.run

    def run(nlp, items, *args, **kwargs):
        def cut():
            for i, item in enumerate(items):
                if i == positions:
                    raise KeyboardInterrupt
                yield item
        return real(nlp, cut(), *args, **kwargs)

    monkeypatch.setattr("spacy_privfilter.cli.scrub.run", run)


@pytest.mark.parametrize("layout", ["output_contains_inputs", "output_is_input_via_symlink", "output_is_input_folder",
                                    "output_inside_symlinked_input_folder"])
def test_an_output_that_is_contains_or_is_inside_an_input_is_refused(tmp_path, capsys, layout):
    folder = tmp_path / "in"
    folder.mkdir()
    a, b = jsonl(folder / "a.jsonl", TEXTS), jsonl(folder / "b.jsonl", TEXTS[:2])
    (tmp_path / "link").symlink_to(folder)
    argv = {"output_contains_inputs": [str(a), str(b), "-o", str(folder)],
            "output_is_input_via_symlink": [str(a), "-o", str(tmp_path / "link" / "a.jsonl")],
            "output_is_input_folder": [str(folder), "-o", str(tmp_path / "link")],
            "output_inside_symlinked_input_folder": [str(tmp_path / "link"), "-o", str(folder / "sub")]}[layout]
    before = {p: p.read_bytes() for p in (a, b)}
    assert main(["redact", *argv, "--model", str(tmp_path / "not-loaded")]) == 2
    assert "input" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in (a, b)} == before
    assert sorted(p.name for p in folder.iterdir()) == ["a.jsonl", "b.jsonl"]


def test_huge_numbers_and_deep_nesting_are_per_line_errors(tmp_path, capsys, checkpoint):
    data = tmp_path / "d.jsonl"
    lines = [json.dumps({"text": TEXTS[0]}), '{"text": "x", "n": ' + "7" * 5000 + "}", "[" * 100_000 + "]" * 100_000,
             json.dumps({"text": TEXTS[1]})]
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "o.jsonl"
    assert main(["redact", str(data), "-o", str(out), "--model", str(checkpoint)]) == 1
    err = capsys.readouterr().err
    assert f"{data}:2: unreadable JSON" in err and f"{data}:3: unreadable JSON" in err
    assert "7777" not in err
    assert len(out.read_text().splitlines()) == 2

    gold = tmp_path / "gold.jsonl"
    gold.write_text(json.dumps({"text": "a", "spans": []}) + "\n" + '{"text": "a", "spans": [], "n": '
                    + "9" * 5000 + "}\n")
    assert main(["evaluate", str(gold), "--predictions", str(gold)]) == 1
    err = capsys.readouterr().err
    assert f"{gold}:2: unreadable JSON" in err and "9999" not in err


def test_missing_text_key_message_lists_no_keys_of_the_record(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"Anna Smith": 1, "body": "x"}) + "\n")
    (item,) = iter_items(discover([str(data)]))
    assert item.error and "Anna" not in item.error and "body" not in item.error and "2 key(s)" in item.error


def test_a_text_file_too_large_for_spacy_is_refused_from_its_size_unread(tmp_path, monkeypatch):
    big = tmp_path / "big.txt"
    big.write_bytes(b"a" * 1000)
    opened = []
    monkeypatch.setattr("builtins.open", lambda *a, **k: opened.append(a) or io.BytesIO(b""))
    (item,) = iter_items(discover([str(big)]), max_bytes=999)
    assert item.error and "more than 999 bytes" in item.error and opened == []


def test_resume_refuses_a_file_added_to_the_input_folder(tmp_path, monkeypatch, capsys, checkpoint):
    folder = tmp_path / "in"
    folder.mkdir()
    for i, text in enumerate(TEXTS):
        (folder / f"{i}.txt").write_text(text)
    out = tmp_path / "out"
    argv = ["redact", str(folder), "-o", str(out), "--model", str(checkpoint), "--batch-size", "2"]
    with monkeypatch.context() as patch:
        interrupt_after(patch, 2)
        assert main(argv) == 130
    (folder / "0a.txt").write_text("Call Ann Lee at 555-0199.")  # sorts before the positions already done
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 2
    assert "changed since the interrupted run" in capsys.readouterr().err
    assert not (out / "0a.txt").exists()


def test_resume_refuses_an_edited_input_and_a_different_stdin(tmp_path, monkeypatch, capsys, checkpoint):
    data = jsonl(tmp_path / "d.jsonl", TEXTS)
    out = tmp_path / "o.jsonl"
    argv = ["redact", str(data), "-o", str(out), "--model", str(checkpoint), "--batch-size", "2"]
    with monkeypatch.context() as patch:
        interrupt_after(patch, 2)
        assert main(argv) == 130
    jsonl(data, TEXTS + ["Bob Stone, 555-0123"])  # appended
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 2
    assert f"input {data.resolve()} changed" in capsys.readouterr().err

    def stdin(texts):
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO("\n".join(texts).encode() + b"\n")))

    out = tmp_path / "s.txt"
    argv = ["redact", "-", "--format", "lines", "-o", str(out), "--model", str(checkpoint), "--batch-size", "2"]
    stdin(TEXTS)
    with monkeypatch.context() as patch:
        interrupt_after(patch, 2)
        assert main(argv) == 130
    stdin(["Someone else entirely"] + TEXTS[1:])
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 2
    assert "stdin differs" in capsys.readouterr().err
    stdin(TEXTS)
    assert main([*argv, "--resume"]) == 0
    resumed = out.read_bytes()
    stdin(TEXTS)
    assert main(argv) == 0 and out.read_bytes() == resumed and len(resumed.splitlines()) == len(TEXTS)


def test_resume_of_a_finished_run_refuses_input_changed_afterwards(tmp_path, capsys, checkpoint):
    data = jsonl(tmp_path / "d.jsonl", TEXTS)
    out = tmp_path / "o.jsonl"
    argv = ["redact", str(data), "-o", str(out), "--model", str(checkpoint)]
    assert main(argv) == 0
    with data.open("a") as handle:
        handle.write(json.dumps({"text": "Bob Stone, 555-0123"}) + "\n")
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 2
    assert "changed after" in capsys.readouterr().err


def test_a_run_with_no_records_replaces_a_stale_output(tmp_path, checkpoint):
    data = tmp_path / "d.jsonl"
    data.write_text("\n")
    out = tmp_path / "o.jsonl"
    out.write_text('{"text": "an old result"}\n')
    assert main(["redact", str(data), "-o", str(out), "--model", str(checkpoint), "-q"]) == 0
    assert out.read_bytes() == b""

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "empty.jsonl").write_text("")
    (folder / "a.txt").write_text(TEXTS[2])
    target = tmp_path / "out"
    target.mkdir()
    (target / "empty.jsonl").write_text("stale\n")
    assert main(["redact", str(folder), "-o", str(target), "--model", str(checkpoint), "-q"]) == 0
    assert (target / "empty.jsonl").read_bytes() == b""


def test_writes_are_synced_before_they_are_renamed_or_recorded(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr("os.fsync", lambda fd: synced.append(os.fstat(fd).st_size) or real_fsync(fd))
    write_atomic(tmp_path / "a.txt", b"12345")
    assert synced[0] == 5  # the temporary file, before the rename
    (source,) = discover([str(jsonl(tmp_path / "d.jsonl", ["x"]))])
    (item,) = iter_items([source])
    outputs = Outputs(tmp_path / "o.jsonl")
    outputs.write_line(item, "abc\n")
    synced.clear()
    outputs.flush()
    assert synced == [4]
    outputs.close()


@pytest.mark.parametrize("option, value, flag", [("--lang", "zz", "--lang"), ("--encoding", "nope", "--encoding"),
                                                 ("--threshold", "nan", "--threshold"),
                                                 ("--threshold", "1.5", "--threshold"),
                                                 ("--max-batch-tokens", "0", "--max-batch-tokens")])
def test_bad_option_values_are_usage_errors_naming_the_flag(tmp_path, capsys, option, value, flag):
    src = jsonl(tmp_path / "d.jsonl", TEXTS[:1])
    try:
        code = main(["redact", str(src), "-o", str(tmp_path / "o.jsonl"), option, value,
                     "--model", str(tmp_path / "not-loaded")])
    except SystemExit as exc:  # argparse's own usage error
        code = exc.code
    assert code == 2
    assert flag in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_a_max_batch_tokens_too_small_for_the_model_names_that_option(tmp_path, capsys, checkpoint):
    src = jsonl(tmp_path / "d.jsonl", TEXTS[:1])
    assert main(["redact", str(src), "-o", str(tmp_path / "o.jsonl"), "--max-batch-tokens", "5",
                 "--model", str(checkpoint)]) == 2
    err = capsys.readouterr().err
    assert "max_batch_tokens" in err and "--max-batch-tokens" in err and "max_tokens " not in err


def test_seeds_are_strings_007_is_not_7(tmp_path, capsys, checkpoint):
    pytest.importorskip("faker")
    src = jsonl(tmp_path / "d.jsonl", TEXTS)
    outs = []
    for seed in ("7", "007", "7"):
        out = tmp_path / f"o{len(outs)}.jsonl"
        assert main(["redact", str(src), "-o", str(out), "--style", "surrogate", "--seed", seed, "-q",
                     "--model", str(checkpoint)]) == 0
        outs.append(out.read_text())
    assert outs[0] == outs[2] != outs[1]


@pytest.mark.parametrize("argv", [["-v", "info"], ["info", "-v"], ["-q", "info", "-v"]])
def test_verbosity_flags_work_before_and_after_the_command(argv, monkeypatch):
    seen = {}
    monkeypatch.setattr("spacy_privfilter.cli.parser._dispatch", lambda args: seen.update(vars(args)) or 0)
    assert main(argv) == 0
    assert (seen["quiet"], seen["verbose"]) == (argv.count("-q"), argv.count("-v"))
    assert "quiet_top" not in seen
