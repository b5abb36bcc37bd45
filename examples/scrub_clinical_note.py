"""Scrub a clinical note end to end: ``privacy_filter`` finds the PHI, ``privacy_redactor`` replaces it.

Usage:
    python examples/scrub_clinical_note.py                          # built-in note, numbered tags
    PRIVFILTER_SURROGATE_SEED=my-secret python examples/scrub_clinical_note.py --style surrogate
    python examples/scrub_clinical_note.py note.txt --style mask --keep-last 4
    python examples/scrub_clinical_note.py --model ./privacy-filter-nemotron --backend torch --restore

The default model (``OpenMed/privacy-filter-nemotron-mlx-8bit``) is downloaded from the Hugging Face Hub on
first use, so the first run needs the network; later runs read it from the local cache (set HF_HUB_OFFLINE=1
to be sure nothing is fetched). ``--model`` also takes a local folder. Needs ``pip install ".[torch]"`` from a
clone of this repository (or ``[mlx]``), and ``[redact]`` for ``--style surrogate``.
"""
import argparse
import sys
from pathlib import Path

import spacy

from spacy_privfilter.detector import DEFAULT_MODEL
from spacy_privfilter.redaction.redactor import restore

NOTE = """DISCHARGE SUMMARY
Patient: Cobb, Clarence    MRN: 68779642    DOB: 10/28/1984
Admitted 08/03/2026, discharged 08/09/2026. Attending: Dr. Monique Hines.
Clarence Cobb is a 41-year-old man who presented with chest pain radiating to the left arm.
He lives at 8820 Amanda Divide, Springfield, IL 62704 and can be reached at (323) 462-5200
or clarence.cobb@example.com. Follow-up with Dr. Hines on 09/04/2026.
"""


def build_nlp(model: str = DEFAULT_MODEL, *, backend: str = "auto", device: str = "auto", seed: str | None = None,
              **redactor_config) -> spacy.language.Language:
    """A blank English pipeline with the detector and the redactor (no import of spacy_privfilter needed).

    The seed is a secret, so it is set in code rather than in the config (which config.cfg would keep in clear).
    """
    nlp = spacy.blank("en")
    nlp.add_pipe("privacy_filter", config={"model": model, "backend": backend, "device": device})
    nlp.add_pipe("privacy_redactor", config=redactor_config).use_secrets(seed=seed)
    return nlp


def scrub(nlp: spacy.language.Language, text: str):
    """The redacted text and one (label, original offsets, replacement) row per replacement."""
    doc = nlp(text)
    rows = [(r["label"], r["start"], r["end"], r["replacement"]) for r in doc._.redactions]
    return doc, rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("note", nargs="?", help="text file with the note (default: a built-in example)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="Hub id or local folder (default: %(default)s)")
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "mlx"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--style", default="tag", choices=["tag", "mask", "hash", "surrogate", "remove"])
    parser.add_argument("--tag-format", default="[{LABEL}_{n}]")
    parser.add_argument("--keep-last", type=int, default=0)
    parser.add_argument("--seed", help="surrogate key: same value, same surrogate across notes (default: "
                                       "$PRIVFILTER_SURROGATE_SEED)")
    parser.add_argument("--restore", action="store_true", help="keep the mapping and show that it undoes the redaction")
    args = parser.parse_args(argv)

    text = Path(args.note).read_text(encoding="utf-8") if args.note else NOTE
    nlp = build_nlp(args.model, backend=args.backend, device=args.device, style=args.style,
                    tag_format=args.tag_format, keep_last=args.keep_last, seed=args.seed, keep_mapping=args.restore)
    doc, rows = scrub(nlp, text)
    print(doc._.redacted_text)
    print(f"{len(rows)} replacements:", file=sys.stderr)
    for label, start, end, replacement in rows:
        print(f"  {start:>5}-{end:<5} {label:<28} -> {replacement}", file=sys.stderr)
    if args.restore:
        same = restore(doc._.redacted_text, doc._.redactions) == text
        print(f"restore() gives back the original note: {same}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
