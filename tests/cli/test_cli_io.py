"""The command line's input, output and resume machinery, in process with a toy pipeline (no model)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from spacy_privfilter.cli.inputs import UsageError, discover, iter_items
from spacy_privfilter.cli.outputs import Outputs, Progress, json_line, progress_path
from spacy_privfilter.cli.stream import run

SECRET = "Zebulon Quackenbush"  # a "PII" string that must never appear in a message


class ToyNLP:
    """Stands in for a spaCy pipeline: a "doc" is the upper-cased text."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.seen = 0
        self.fail_at = fail_at

    def pipe(self, texts, batch_size=1):
        for text in texts:
            self.seen += 1
            if self.fail_at is not None and self.seen == self.fail_at:
                raise KeyboardInterrupt  # what Ctrl-C in the middle of a batch looks like
            yield text.upper()


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_discover_mirrors_folders_sorted_and_skips_hidden(tmp_path):
    notes = tmp_path / "notes"
    (notes / "b" / ".git").mkdir(parents=True)
    for rel in ("z.txt", "a.txt", "b/c.txt", "b/d.jsonl", ".hidden.txt", "b/.git/x.txt", "skip.md"):
        (notes / rel).write_text("x")
    sources = discover([str(notes)], glob="*.*")
    assert [s.dest for s in sources] == ["a.txt", "b/c.txt", "b/d.jsonl", "skip.md", "z.txt"]
    assert [s.kind for s in sources] == ["text", "text", "jsonl", "text", "text"]
    assert [s.dest for s in discover([str(notes)], glob="*.txt")] == ["a.txt", "b/c.txt", "z.txt"]
    # several inputs: a folder keeps its own name as the first part of the mirrored path
    extra = tmp_path / "one.txt"
    extra.write_text("x")
    dests = [s.dest for s in discover([str(notes), str(extra)], glob="*.txt")]
    assert dests == ["notes/a.txt", "notes/b/c.txt", "notes/z.txt", "one.txt"]
    assert discover(["-"])[0].path is None and discover(["-"], fmt="lines")[0].kind == "lines"
    with pytest.raises(UsageError):
        discover(["-", "-"])


def test_bad_inputs_name_file_and_line_never_text(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text(f"Dear {SECRET}")
    binary = tmp_path / "image.txt"
    binary.write_bytes(b"\x89PNG\x00\x00" + SECRET.encode())
    latin = tmp_path / "latin.txt"
    latin.write_bytes(f"line one\n{SECRET} caf\xe9\n".encode("latin-1"))
    data = tmp_path / "data.jsonl"
    data.write_bytes(b"\n".join([
        json.dumps({"text": SECRET, "id": 1}).encode(),
        b"",                                             # blank: passed over silently
        b'{"text": "' + SECRET.encode() + b'", ',       # truncated JSON
        json.dumps([SECRET]).encode(),                   # not an object
        json.dumps({"body": SECRET}).encode(),           # no text key
        # line 6: Latin-1 bytes where UTF-8 is expected
        json.dumps({"text": SECRET + " caf\u00e9"}, ensure_ascii=False).encode("utf-8").replace(b"\xc3\xa9", b"\xe9"),
        json.dumps({"text": "last"}).encode(),
    ]) + b"\n")
    sources = discover([str(good), str(tmp_path / "missing.txt"), str(binary), str(latin), str(data)])
    items = list(iter_items(sources))
    errors = [i.error for i in items if i.error]
    assert [t for i in items for t in i.documents] == [f"Dear {SECRET}", SECRET, "last"]
    assert len(errors) == 7
    expected = ["missing.txt: no such file", "image.txt: looks like a binary", "latin.txt:2: not valid utf-8",
                "data.jsonl:3: invalid JSON", "data.jsonl:4: expected a JSON object",
                "data.jsonl:5: key 'text' is missing", "data.jsonl:6: not valid utf-8"]
    for message, fragment in zip(errors, expected):
        assert fragment in message
        assert "Zebulon" not in message and "caf" not in message
    # the encoding can be chosen
    assert next(iter_items(discover([str(latin)]), encoding="latin-1")).text.endswith("caf\xe9\n")


def test_skip_passes_over_positions_without_reading(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": str(i)}) + "\n" for i in range(5)))
    texts = [t for i in iter_items(discover([str(tmp_path / "gone.txt"), str(data)]), skip=3) for t in i.documents]
    assert texts == ["2", "3", "4"]  # position 1 was the missing file: skipped, not reported again


def _redact_run(sources, target, *, as_dir, nlp, resume=False, batch_size=3):
    fingerprint = {"inputs": [str(s.path) for s in sources]}
    progress = Progress(progress_path(target, as_dir), fingerprint)
    state = progress.load() if resume else None
    done, sizes = (state["done"], state["sizes"]) if state else (0, {})
    outputs = Outputs(target, as_dir=as_dir, sizes=sizes)

    def write(item, docs):
        if item.record is not None:
            outputs.write_line(item, json_line({**item.record, "text": docs[0]}))
        else:
            outputs.write_document(item, docs[0])
        return 0

    items = iter_items(sources, skip=done)
    run(nlp, items, outputs, progress, write=write, batch_size=batch_size, done=done)
    progress.remove()


def _inputs(tmp_path):
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    for i in range(4):
        (root / f"t{i}.txt").write_text(f"note {i}\r\nsecond line")
    (root / "sub" / "big.jsonl").write_text(
        "".join(json.dumps({"id": i, "text": f"record {i}"}) + "\n" for i in range(20)))
    (root / "sub" / "z.txt").write_text("last")
    return discover([str(root)])


@pytest.mark.parametrize("fail_at", [2, 7, 14, 24])
def test_interrupted_run_resumes_to_the_same_tree(tmp_path, fail_at):
    sources = _inputs(tmp_path)
    _redact_run(sources, tmp_path / "straight", as_dir=True, nlp=ToyNLP())
    expected = _tree(tmp_path / "straight")
    assert expected["t0.txt"] == b"NOTE 0\r\nSECOND LINE" and len(expected) == 6
    assert expected["sub/big.jsonl"].count(b"\n") == 20

    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        _redact_run(sources, out, as_dir=True, nlp=ToyNLP(fail_at=fail_at))
    saved = json.loads((out / ".spacy-privfilter-progress.json").read_text())
    assert saved["done"] == (fail_at - 1) // 3 * 3  # whole batches only
    _redact_run(sources, out, as_dir=True, nlp=ToyNLP(), resume=True)
    assert _tree(out) == expected


def test_resume_drops_a_half_written_batch(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": f"r{i}"}) + "\n" for i in range(10)))
    sources = discover([str(data)])
    target = tmp_path / "out.jsonl"
    _redact_run(sources, target, as_dir=False, nlp=ToyNLP())
    expected = target.read_bytes()
    target.unlink()
    with pytest.raises(KeyboardInterrupt):
        _redact_run(sources, target, as_dir=False, nlp=ToyNLP(fail_at=8))
    # simulate a kill after a flush but before the progress file was replaced: junk past the recorded size
    with open(target, "ab") as handle:
        handle.write(b'{"text": "R6"}\n{"te')
    _redact_run(sources, target, as_dir=False, nlp=ToyNLP(), resume=True)
    assert target.read_bytes() == expected
    assert not progress_path(target, False).exists()


def test_resume_refuses_other_inputs(tmp_path):
    progress = Progress(tmp_path / "p.json", {"inputs": ["a"]})
    progress.save(3, {".": 10})
    assert Progress(tmp_path / "p.json", {"inputs": ["a"]}).load() == {"done": 3, "sizes": {".": 10},
                                                                       "stdin_sha256": None}
    with pytest.raises(UsageError):
        Progress(tmp_path / "p.json", {"inputs": ["b"]}).load()


def test_resume_refuses_a_missing_or_shortened_output(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": f"r{i}"}) + "\n" for i in range(6)))
    sources = discover([str(data)])
    target = tmp_path / "out.jsonl"
    with pytest.raises(KeyboardInterrupt):
        _redact_run(sources, target, as_dir=False, nlp=ToyNLP(fail_at=5))
    target.write_bytes(target.read_bytes()[:5])
    with pytest.raises(UsageError, match="shorter than recorded"):
        _redact_run(sources, target, as_dir=False, nlp=ToyNLP(), resume=True)
    target.unlink()
    with pytest.raises(UsageError, match="missing"):
        _redact_run(sources, target, as_dir=False, nlp=ToyNLP(), resume=True)


def test_no_progress_bar_without_tqdm(monkeypatch):
    from spacy_privfilter.cli.stream import progress_bar

    monkeypatch.setitem(__import__("sys").modules, "tqdm", None)  # None in sys.modules blocks the import
    monkeypatch.setitem(__import__("sys").modules, "tqdm.auto", None)
    assert progress_bar(total=3, enabled=True) is None
