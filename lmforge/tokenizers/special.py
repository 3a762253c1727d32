"""The special-token sets lmforge's tokenizers and tasks use, in one place, and the lookups
of special-token ids (a missing one is a TokenizerError that says why it is needed)."""

from __future__ import annotations

from ..errors import TokenizerError

EOS_TOKEN = "<|endoftext|>"
"""The document separator of byte-level BPE and char tokenizers (GPT-2's)."""
UNK_TOKEN = "<unk>"
BERT_SPECIAL_TOKENS: list[str] = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
"""WordPiece / BERT: unknown, classification, separator, padding, mask."""
SEQ2SEQ_SPECIAL_TOKENS: list[str] = ["<pad>", "<s>", "</s>", "<unk>"]
"""Encoder–decoders (translation, span corruption): padding, start, end, unknown."""
IGNORE_INDEX = -100
"""Label value that losses skip (PyTorch's cross-entropy default, and transformers')."""


def default_special_tokens(kind: str) -> list[str]:
    """The special tokens a tokenizer ``kind`` gets when none are given."""
    if kind == "wordpiece":
        return list(BERT_SPECIAL_TOKENS)
    if kind == "bpe":
        return [EOS_TOKEN]
    return [EOS_TOKEN, UNK_TOKEN]


def eos_token_id(tokenizer) -> int | None:
    """Id of the document separator: ``<|endoftext|>``, else ``[SEP]``, else None."""
    for tok in (EOS_TOKEN, "[SEP]"):
        idx = tokenizer.token_to_id(tok)
        if idx is not None:
            return idx
    return None


def require_tokens(tokenizer, names: dict[str, str], why: str) -> dict[str, int]:
    """Ids of the named special tokens (e.g. ``{"cls": "[CLS]"}``); a TokenizerError listing the
    missing ones and ``why`` they are needed otherwise."""
    ids = {k: tokenizer.token_to_id(t) for k, t in names.items()}
    missing = [names[k] for k, v in ids.items() if v is None]
    if missing:
        raise TokenizerError(f"the tokenizer has no {', '.join(missing)} token(s); {why}")
    return ids
