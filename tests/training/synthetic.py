"""A learnable synthetic task: each word is one o200k token and its label follows from which word it is."""
from __future__ import annotations

import numpy as np

from spacy_privfilter.tokens import O200K_PATTERN, Tokenizer
from spacy_privfilter.training import GoldSpan, LabelledDoc

FIRST = (" Alice", " Bob", " Carol", " David", " Emma", " Frank")      # B-private_person
LAST = (" Smith", " Jones", " Brown", " Taylor")                       # E-private_person
EMAIL = (" zebra", " quartz", " violin")                               # S-private_email
PETS = (" cat", " dog", " parrot")                                     # S-pet (a class the model lacks)
FILLER = (" the", " a", " of", " and", " house", " green", " runs", " over", " today", " with", " blue",
          " water", " small", " door")


def make_docs(n: int, *, seed: int, pets: bool = False) -> list[LabelledDoc]:
    """``n`` documents of filler words with names (two tokens), emails (one) and optionally pets inserted."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n):
        text, spans = "", []
        for _ in range(int(rng.integers(6, 16))):
            kind = rng.random()
            if kind < 0.15:
                word = str(rng.choice(FIRST)) + str(rng.choice(LAST))
                label = "private_person"
            elif kind < 0.25:
                word, label = str(rng.choice(EMAIL)), "private_email"
            elif pets and kind < 0.35:
                word, label = str(rng.choice(PETS)), "pet"
            else:
                word, label = str(rng.choice(FILLER)), None
            if label:
                spans.append(GoldSpan(len(text) + 1, len(text) + len(word), label))  # the leading space is not PII
            text += word
        docs.append(LabelledDoc(text, tuple(spans), "synthetic"))
    return docs

VOCAB_SIZE = 320  # 256 byte tokens, the words above, <|endoftext|>, room to spare


def small_tokenizer() -> Tokenizer:
    """A BPE tokenizer over just the bytes and the words above (ids < 320), so the test model's vocabulary (and
    its embedding) is small; each word, with its leading space, is one token as in o200k."""
    import tiktoken

    ranks = {bytes([i]): i for i in range(256)}
    for word in FIRST + LAST + EMAIL + PETS + FILLER:
        ranks[word.encode("utf-8")] = len(ranks)
    encoding = tiktoken.Encoding(name="synthetic", pat_str=O200K_PATTERN, mergeable_ranks=ranks,
                                 special_tokens={"<|endoftext|>": len(ranks)})
    return Tokenizer(encoding)
