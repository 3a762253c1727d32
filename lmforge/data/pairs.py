"""Sentence pairs for next-sentence prediction (BERT pre-training).

Text is split into documents (separated by blank lines; each file or JSONL record is also its
own document) and documents into sentences (lines, and sentences within long lines). A pair
is segment A, a run of consecutive sentences ending at a sentence boundary, and segment B:
with probability 1/2 the sentences that follow A in its document (label 0, "is next"), else
sentences from another document (label 1, "random"). Pairs are packed as

    [CLS] A [SEP] B [SEP] [PAD] ...     token_type_ids 0 ... 0  1 ... 1  0 ...

truncating the longer segment (A from its start, B from its end) until they fit. Batches are
a pure function of ``(seed, step, micro_step, rank)``, so a resumed run sees the same pairs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, Iterable, Sequence

import numpy as np
import torch

from ..errors import DataError
from .encode import EncoderSpecials

_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9])")
MIN_SEQ_LEN = 5  # [CLS] a [SEP] b [SEP]


def split_sentences(text: str) -> list[list[str]]:
    """A text -> its documents (split at blank lines) -> their sentences (non-empty lines,
    each also split after ``.``/``!``/``?`` followed by a capital, digit or quote)."""
    docs = []
    for block in _BLANK_LINES.split(text.replace("\r\n", "\n")):
        sentences = [s.strip() for line in block.split("\n") for s in _SENTENCE_END.split(line)]
        sentences = [s for s in sentences if s]
        if sentences:
            docs.append(sentences)
    return docs


@dataclass(frozen=True)
class SpecialIds(EncoderSpecials):
    """An encoder's special ids with [MASK], for masked-LM / NSP pre-training."""

    mask: int

    TOKENS: ClassVar[dict[str, str]] = {**EncoderSpecials.TOKENS, "mask": "[MASK]"}
    WHY: ClassVar[str] = ("masked-LM / NSP training needs them: train a WordPiece tokenizer "
                          "(tokenizer.kind = \"wordpiece\") or use a BERT tokenizer.json")

    @property
    def never_masked(self) -> list[int]:
        return [self.cls, self.sep, self.pad]


def pack_pair(a: np.ndarray, b: np.ndarray, seq_len: int, special: SpecialIds):
    """[CLS] a [SEP] b [SEP], padded to ``seq_len``; ``a``/``b`` must already fit.
    Returns (ids (T,), token_type_ids (T,), padding_mask (T,) bool)."""
    la, lb = len(a), len(b)
    n = la + lb + 3
    if n > seq_len:
        raise DataError(f"segments of {la} + {lb} tokens do not fit a sequence of {seq_len}")
    ids = np.full(seq_len, special.pad, dtype=np.int64)
    ids[0], ids[la + 1], ids[n - 1] = special.cls, special.sep, special.sep
    ids[1:la + 1], ids[la + 2:n - 1] = a, b
    types = np.zeros(seq_len, dtype=np.int64)
    types[la + 2:n] = 1  # B and its [SEP]
    mask = np.zeros(seq_len, dtype=bool)
    mask[:n] = True
    return ids, types, mask


def truncate_pair(a: np.ndarray, b: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Shorten the longer segment one token at a time until ``len(a) + len(b) <= budget``:
    A loses its first tokens and B its last, so the A|B boundary stays intact."""
    la, lb = len(a), len(b)
    excess = la + lb - budget
    if excess > 0:
        cut_a = min(excess, max(0, la - lb))  # first bring the longer one down to the other
        cut_b = min(excess - cut_a, max(0, lb - la))
        rest = excess - cut_a - cut_b  # then alternate (A first when equal)
        la, lb = la - cut_a - (rest + 1) // 2, lb - cut_b - rest // 2
    return a[len(a) - la:], b[:lb]


class SentencePairs:
    """NSP pairs drawn from tokenised documents (a list of documents, each a list of
    sentences, each an array of token ids)."""

    def __init__(self, docs: Sequence[Sequence[Sequence[int]]], seq_len: int, special: SpecialIds):
        if seq_len < MIN_SEQ_LEN:
            raise DataError(f"sequence length {seq_len} is too short for sentence pairs: "
                            f"[CLS] A [SEP] B [SEP] needs at least {MIN_SEQ_LEN} tokens")
        self.docs = [d for d in ([np.asarray(s, dtype=np.int64) for s in doc if len(s)]
                                 for doc in docs) if d]
        self.seq_len, self.special = seq_len, special
        # every (document, cut) where a document has sentences on both sides of the cut
        self.boundaries = np.array([(i, c) for i, d in enumerate(self.docs) for c in range(1, len(d))],
                                   dtype=np.int64).reshape(-1, 2)
        if len(self.docs) < 2 or len(self.boundaries) == 0:
            raise DataError(
                f"next-sentence pairs need at least 2 documents and one document of 2 or more "
                f"sentences; got {len(self.docs)} document(s) with {len(self.boundaries)} "
                "sentence boundaries. Separate documents with blank lines and put sentences on "
                "their own lines (or give more text)")

    @classmethod
    def from_texts(cls, texts: Iterable[str], tokenizer, seq_len: int) -> "SentencePairs":
        """Pairs from raw texts, split with :func:`split_sentences` and tokenised."""
        return cls.from_documents([d for t in texts for d in split_sentences(t)], tokenizer, seq_len)

    @classmethod
    def from_documents(cls, docs: Sequence[Sequence[str]], tokenizer, seq_len: int) -> "SentencePairs":
        """Pairs from documents given as lists of sentence strings, tokenised here (without
        the tokenizer's own special tokens)."""
        special = SpecialIds.from_tokenizer(tokenizer)
        flat = [s for d in docs for s in d]
        encs = tokenizer.encode_batch(flat, add_special_tokens=False) if flat else []
        ids, k = [], 0
        for d in docs:
            ids.append([encs[k + j].ids for j in range(len(d))])
            k += len(d)
        return cls(ids, seq_len, special)

    @property
    def n_sentences(self) -> int:
        return sum(len(d) for d in self.docs)

    def _run(self, doc: list[np.ndarray], start: int, step: int, want: int) -> np.ndarray:
        """Sentences from ``start`` going forward (step 1) or backward (step -1) until at
        least ``want`` tokens (at least one sentence), concatenated in text order."""
        taken, n, i = [], 0, start
        while 0 <= i < len(doc) and (not taken or n < want):
            taken.append(doc[i])
            n += len(doc[i])
            i += step
        return np.concatenate(taken[::step])

    def pair(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
        """(A, B, label): label 0 = B follows A, 1 = B comes from another document."""
        budget = self.seq_len - 3
        d, cut = self.boundaries[rng.integers(len(self.boundaries))]
        a = self._run(self.docs[d], cut - 1, -1, budget // 2)
        if rng.random() < 0.5:
            doc, start, label = self.docs[d], cut, 0
        else:
            other = int(rng.integers(len(self.docs) - 1))
            doc = self.docs[other + (other >= d)]
            start, label = int(rng.integers(len(doc))), 1
        b = self._run(doc, start, 1, budget - len(a))
        a, b = truncate_pair(a, b, budget)
        return a, b, label

    def batch(self, batch_size: int, seed: int, step: int, micro_step: int = 0,
              rank: int = 0) -> dict[str, torch.Tensor]:
        """``batch_size`` packed pairs: input_ids, token_type_ids (B, T) int64, padding_mask
        (B, T) bool, nsp_labels (B,) int64."""
        if batch_size < 1:
            raise DataError(f"batch_size must be at least 1, got {batch_size}")
        rng = np.random.default_rng([int(seed), int(step), int(micro_step), int(rank)])
        rows = [self.pair(rng) for _ in range(batch_size)]
        packed = [pack_pair(a, b, self.seq_len, self.special) for a, b, _ in rows]
        ids, types, mask = (torch.from_numpy(np.stack(x)) for x in zip(*packed))
        labels = torch.tensor([lab for _, _, lab in rows], dtype=torch.int64)
        return {"input_ids": ids, "token_type_ids": types, "padding_mask": mask,
                "nsp_labels": labels}
