"""Text -> token ids with exact code-point offsets (tiktoken o200k_base).

CONTRACT (issue #2):
    get_tokenizer(path=None) -> Tokenizer       cached; ``path`` = explicit o200k_base.tiktoken file
    Tokenizer.encode(text: str) -> TokenizedText
    TokenizedText: input_ids int64 [T], char_starts int64 [T], char_ends int64 [T] (half-open code-point
        offsets into the ORIGINAL string); len(tokenized) == T.
"""
