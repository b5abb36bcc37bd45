"""Decoder cost per token (O(C) Viterbi vs the dense O(C^2) recurrence) and tokenisation throughput.

Run: ``python benchmarks/bench_decode.py [--tokens 4000] [--repeats 3]``. Prints numbers; asserts nothing
beyond the two decoders agreeing. Needs the o200k_base encoding (set TIKTOKEN_CACHE_DIR when offline).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from spacy_privfilter.decode import boundary_scores, log_softmax, transition_matrix, viterbi, viterbi_dense
from spacy_privfilter.labels import BIAS_KEYS, LabelScheme, TransitionBiases
from spacy_privfilter.tokens import get_tokenizer

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_decoder(tokens: int, repeats: int) -> None:
    scheme = LabelScheme.from_classes([f"class_{i:02d}" for i in range(55)])  # 221 labels, Nemotron layout
    rng = np.random.default_rng(0)
    log_probs = log_softmax(rng.normal(0, 3, size=(tokens, scheme.num_labels)).astype(np.float32))
    biases = TransitionBiases(**dict(zip(BIAS_KEYS, rng.normal(0, 0.5, size=6).tolist())))
    fast_path = viterbi(log_probs, scheme, biases)
    dense_path = viterbi_dense(log_probs, scheme, biases)
    assert np.array_equal(fast_path, dense_path), "decoders disagree"
    fast = best_of(repeats, lambda: viterbi(log_probs, scheme, biases))
    dense = best_of(repeats, lambda: viterbi_dense(log_probs, scheme, biases))
    print(f"viterbi, {scheme.num_labels} labels, {tokens} tokens (best of {repeats}):")
    print(f"  structured O(C) : {fast / tokens * 1e6:8.2f} us/token  ({tokens / fast:10.0f} tokens/s)")
    print(f"  dense O(C^2)    : {dense / tokens * 1e6:8.2f} us/token  ({tokens / dense:10.0f} tokens/s)")
    print(f"  speed-up        : {dense / fast:8.2f}x  (identical paths: yes)")
    few = min(tokens, 200)
    loops = best_of(1, lambda: _viterbi_loops(log_probs[:few], scheme, biases))
    print(f"  per-label loops : {loops / few * 1e6:8.2f} us/token  (textbook loop over each label's "
          f"predecessors, {few} tokens)")


def _viterbi_loops(log_probs, scheme, biases):
    """Brute force as in the tests: for each label, argmax over all C predecessors."""
    trans = transition_matrix(scheme, biases)
    start, end = boundary_scores(scheme)
    delta = log_probs[0] + start
    back = np.zeros(log_probs.shape, dtype=np.int64)
    for t in range(1, len(log_probs)):
        new = np.empty_like(delta)
        for j in range(scheme.num_labels):
            scores = delta + trans[:, j]
            back[t, j] = int(np.argmax(scores))
            new[j] = scores[back[t, j]] + log_probs[t, j]
        delta = new
    return int(np.argmax(delta + end))


def sample_texts() -> list[str]:
    texts = []
    for path in sorted(DATA.glob("*.jsonl")):
        texts += [json.loads(line)["text"] for line in path.read_text().splitlines() if line]
    if not texts:  # no shared data: a mixed-script stand-in
        texts = ["Patient Ana López, DOB 03/04/1975, 東京都 🙂 call +1 555 0100.\r\n"] * 2000
    return texts


def bench_tokenizer(repeats: int) -> None:
    tokenizer = get_tokenizer()
    texts = sample_texts()
    joined = "\n".join(texts)
    mixed = ("Ärztin Zoë Ñúñez 東京都千代田区 👩\u200d⚕️ ☎ +49 30 1234567. " * 4000)
    for name, batch in (("shared data, per record", texts), ("shared data, one document", [joined]),
                        ("non-ASCII document", [mixed])):
        chars = sum(len(t) for t in batch)
        n_tokens = sum(len(tokenizer.encode(t)) for t in batch)
        full = best_of(repeats, lambda: [tokenizer.encode(t) for t in batch])
        ids_only = best_of(repeats, lambda: [tokenizer.encoding.encode_ordinary(t) for t in batch])
        print(f"tokenise + offsets, {name}: {len(batch)} texts, {chars} chars, {n_tokens} tokens")
        print(f"  encode() with offsets : {chars / full / 1e6:6.2f} M chars/s")
        print(f"  tiktoken ids only     : {chars / ids_only / 1e6:6.2f} M chars/s  "
              f"(offsets add {100 * (full - ids_only) / ids_only:.0f}%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    bench_decoder(args.tokens, args.repeats)
    bench_tokenizer(args.repeats)


if __name__ == "__main__":
    main()
