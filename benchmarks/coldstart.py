"""Cold start: a fresh interpreter that imports, loads the model and processes its first document.

Usage: ``python -m benchmarks.coldstart SPEC.json RESULT.json``. The parent times the whole process from the
outside (interpreter start included); this child reports the split. The spec's first document is read
before the clock starts, so file reading is not counted.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

START = time.perf_counter()


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    text = spec["text"]
    begin = time.perf_counter()
    if spec["kind"] == "project":
        split = _project(spec, text)
    elif spec["kind"] == "hf":
        split = _hf(spec, text)
    else:
        raise SystemExit(f"cold start is not measured for kind {spec['kind']!r}")
    split["child_total_s"] = time.perf_counter() - begin
    Path(argv[1]).write_text(json.dumps(split), encoding="utf-8")
    return 0


def _project(spec: dict, text: str) -> dict:
    t0 = time.perf_counter()
    import spacy

    import spacy_privfilter  # noqa: F401 - imported on purpose: part of what a user pays for

    t1 = time.perf_counter()
    nlp = spacy.blank("en")
    nlp.add_pipe("privacy_filter", config={"model": spec["checkpoint_dir"], "backend": spec["backend"],
                                           "device": spec["device"], "dtype": spec["dtype"]})
    nlp.initialize()
    t2 = time.perf_counter()
    doc = nlp(text)
    t3 = time.perf_counter()
    return {"import_s": t1 - t0, "load_s": t2 - t1, "first_doc_s": t3 - t2, "doc_len": len(doc)}


def _hf(spec: dict, text: str) -> dict:
    t0 = time.perf_counter()
    import tiktoken
    import torch
    from transformers import AutoModelForTokenClassification

    t1 = time.perf_counter()
    model = AutoModelForTokenClassification.from_pretrained(spec["checkpoint_dir"],
                                                            experts_implementation=spec["experts"])
    model = model.to(spec["device"]).eval()
    t2 = time.perf_counter()
    ids = tiktoken.get_encoding("o200k_base").encode(text, disallowed_special=())
    with torch.inference_mode():
        input_ids = torch.tensor([ids], device=spec["device"])
        model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits.float().cpu()
    t3 = time.perf_counter()
    return {"import_s": t1 - t0, "load_s": t2 - t1, "first_doc_s": t3 - t2, "doc_len": len(ids)}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
