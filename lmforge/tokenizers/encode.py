"""Encoding long texts fast and exactly: cut them at line breaks where the tokenizer's output
cannot change, and encode the pieces in parallel batches (``encode_batch``)."""

from __future__ import annotations

import json
from typing import Iterable, Iterator

import numpy as np
from tokenizers import Tokenizer

_CHUNK_CHARS = 1 << 16  # long documents are encoded in pieces of about this many characters
_BATCH_CHARS = 1 << 20  # characters sent to one encode_batch call
# Pre-tokenizers that never join text across "X\nY" (X, Y not whitespace), so cutting a long
# text there gives exactly the same tokens as encoding it whole.
_CHUNK_SAFE_PRE_TOKENIZERS = frozenset({"ByteLevel", "BertPreTokenizer", "Whitespace", "WhitespaceSplit"})


def _safe_cut(text: str, pos: int) -> int:
    """First index ``i >= pos`` with ``text[i-2:i+1] == X"\\n"Y`` (X, Y not whitespace), or -1."""
    i = text.find("\n", max(pos - 1, 1))
    while 0 < i < len(text) - 1:
        if not text[i - 1].isspace() and not text[i + 1].isspace():
            return i + 1
        i = text.find("\n", i + 1)
    return -1


def chunk_text(text: str, size: int = _CHUNK_CHARS) -> list[str]:
    """Cut ``text`` into pieces of about ``size`` characters, only at "X\\nY" line breaks."""
    pieces: list[str] = []
    start = 0
    while len(text) - start > size:
        cut = _safe_cut(text, start + size)
        if cut < 0:
            break
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def can_chunk(tokenizer: Tokenizer) -> bool:
    """Whether cutting text at "X\\nY" line breaks leaves this tokenizer's output unchanged."""
    pre = tokenizer.pre_tokenizer
    if pre is not None:
        return type(pre).__name__ in _CHUNK_SAFE_PRE_TOKENIZERS
    # lmforge's char tokenizer: a BPE model without merges and without a pre-tokenizer.
    model = json.loads(tokenizer.to_str()).get("model", {})
    return model.get("type") == "BPE" and not model.get("merges")


def encode_stream(
    tokenizer: Tokenizer,
    texts: Iterable[str],
    sep_id: int | None = None,
    leading_sep: bool = False,
    chunk: bool | None = None,
) -> Iterator[np.ndarray]:
    """Token ids of ``texts`` in order, ``sep_id`` between consecutive texts, as int64 arrays.

    Long texts are encoded in chunks with ``encode_batch`` (parallel) when that is exact for
    this tokenizer (see :func:`can_chunk`). No post-processor specials are added.
    """
    if chunk is None:
        chunk = can_chunk(tokenizer)
    sep = np.array([sep_id], dtype=np.int64) if sep_id is not None else None
    pending: list[str | None] = []  # None marks a separator
    pending_chars = 0

    def flush() -> Iterator[np.ndarray]:
        strings = [p for p in pending if p is not None]
        encodings = iter(tokenizer.encode_batch(strings, add_special_tokens=False)) if strings else iter(())
        for p in pending:
            if p is None:
                yield sep  # type: ignore[misc]
            else:
                yield np.asarray(next(encodings).ids, dtype=np.int64)
        pending.clear()

    for k, text in enumerate(texts):
        if sep is not None and (k > 0 or leading_sep):
            pending.append(None)
        for piece in chunk_text(text) if chunk else [text]:
            pending.append(piece)
            pending_chars += len(piece)
            if pending_chars >= _BATCH_CHARS:
                yield from flush()
                pending_chars = 0
    yield from flush()
