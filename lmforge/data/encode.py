"""Texts -> encoder inputs: ``[CLS] text [SEP]`` (or ``[CLS] a [SEP] b [SEP]`` for pairs),
cut to ``max_len`` tokens, and padded batches of them.

Long texts are truncated by one of three strategies (Sun et al. 2019, "How to fine-tune BERT
for text classification", found head+tail best on long reviews):

* ``head``      – keep the first tokens;
* ``tail``      – keep the last tokens;
* ``head+tail`` – keep the first quarter of the budget from the start and the rest from the
  end (128 + 382 of BERT's 510).

For pairs the budget is shared longest-first (the longer text loses tokens until both fit),
and each text is then cut with the strategy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, Sequence

import numpy as np
import torch

from ..errors import ConfigError
from ..tokenizers.special import require_tokens

Truncation = Literal["head", "tail", "head+tail"]
TRUNCATIONS: tuple[str, ...] = ("head", "tail", "head+tail")


def truncate(ids: Sequence[int], n: int, strategy: str = "head") -> list[int]:
    """At most ``n`` of ``ids``, chosen by ``strategy`` (module doc)."""
    _check_truncation(strategy)
    ids = list(ids)
    if len(ids) <= n:
        return ids
    if n <= 0:
        return []
    if strategy == "head":
        return ids[:n]
    if strategy == "tail":
        return ids[len(ids) - n:]
    head = n // 4
    return ids[:head] + ids[len(ids) - (n - head):]


def _check_truncation(strategy: str) -> None:
    if strategy not in TRUNCATIONS:
        raise ConfigError(f"truncation {strategy!r} is unknown; choose one of "
                          f"{', '.join(TRUNCATIONS)}")


def pair_budgets(la: int, lb: int, budget: int) -> tuple[int, int]:
    """Longest-first: token counts (na, nb) with na + nb <= budget, taking from the longer."""
    excess = la + lb - max(budget, 0)
    if excess <= 0:
        return la, lb
    first = min(excess, abs(la - lb))  # bring the longer one down to the other's length
    na, nb = (la - first, lb) if la >= lb else (la, lb - first)
    rest = excess - first  # then take from both in turn, the first text first
    return na - (rest + 1) // 2, nb - rest // 2


@dataclass(frozen=True)
class EncoderSpecials:
    """The ids of an encoder's special tokens, looked up by name in a tokenizer."""

    cls: int
    sep: int
    pad: int

    TOKENS: ClassVar[dict[str, str]] = {"cls": "[CLS]", "sep": "[SEP]", "pad": "[PAD]"}
    WHY: ClassVar[str] = ("encoder classifiers read [CLS] text [SEP] (padded with [PAD]): use a "
                          "BERT/WordPiece tokenizer (tokenizer.kind = \"wordpiece\")")

    @classmethod
    def from_tokenizer(cls, tokenizer):
        """The ids, or a TokenizerError naming the missing tokens and why they are needed."""
        return cls(**require_tokens(tokenizer, cls.TOKENS, cls.WHY))


@dataclass
class EncodedTexts:
    """Token ids and token types of each text, specials included (ragged, unpadded)."""

    ids: list[np.ndarray]
    type_ids: list[np.ndarray]
    n_truncated: int
    pad_id: int

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(x) for x in self.ids], dtype=np.int64)

    def batch(self, idx: Sequence[int]) -> dict[str, torch.Tensor]:
        """Rows ``idx`` padded to the longest: input_ids, token_type_ids (B, T) int64 and
        padding_mask (B, T) bool (True = real token)."""
        T = max(len(self.ids[i]) for i in idx)
        ids = np.full((len(idx), T), self.pad_id, dtype=np.int64)
        types = np.zeros((len(idx), T), dtype=np.int64)
        mask = np.zeros((len(idx), T), dtype=bool)
        for r, i in enumerate(idx):
            n = len(self.ids[i])
            ids[r, :n], types[r, :n], mask[r, :n] = self.ids[i], self.type_ids[i], True
        return {"input_ids": torch.from_numpy(ids), "token_type_ids": torch.from_numpy(types),
                "padding_mask": torch.from_numpy(mask)}

    def eval_order(self, batch_size: int) -> list[list[int]]:
        """Batches of row indices sorted by length (little padding) for inference."""
        order = np.argsort(self.lengths, kind="stable")
        return [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]


def plain_tokenizer(tokenizer):
    """A copy of ``tokenizer`` without its own padding/truncation (tokenizer.json files of
    Hugging Face models often fix both); the original is left as it is."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer.to_str())
    tok.no_padding()
    tok.no_truncation()
    return tok


def encode_texts(tokenizer, texts: Sequence[str], pairs: Sequence[str] | None = None, *,
                 max_len: int = 128, truncation: str = "head") -> EncodedTexts:
    """``[CLS] text [SEP]`` (``[CLS] a [SEP] b [SEP]`` with ``pairs``, token types 0 then 1),
    each at most ``max_len`` tokens. ``tokenizer``: a ``tokenizers.Tokenizer``."""
    _check_truncation(truncation)
    n_special = 3 if pairs is not None else 2
    if max_len < n_special + 1:
        raise ConfigError(f"max_len {max_len} is too short: [CLS] text [SEP] needs at least "
                          f"{n_special + 1} tokens")
    sp = EncoderSpecials.from_tokenizer(tokenizer)
    tok = plain_tokenizer(tokenizer)
    a = [e.ids for e in tok.encode_batch(list(texts), add_special_tokens=False)]
    b = None if pairs is None else \
        [e.ids for e in tok.encode_batch(list(pairs), add_special_tokens=False)]
    budget = max_len - n_special
    ids, types, cut = [], [], 0
    for i, x in enumerate(a):
        if b is None:
            cut += len(x) > budget
            seq = [sp.cls, *truncate(x, budget, truncation), sp.sep]
            t = np.zeros(len(seq), dtype=np.int64)
        else:
            y = b[i]
            na, nb = pair_budgets(len(x), len(y), budget)
            cut += na < len(x) or nb < len(y)
            first = [sp.cls, *truncate(x, na, truncation), sp.sep]
            seq = first + [*truncate(y, nb, truncation), sp.sep]
            t = np.zeros(len(seq), dtype=np.int64)
            t[len(first):] = 1
        ids.append(np.asarray(seq, dtype=np.int64))
        types.append(t)
    return EncodedTexts(ids, types, int(cut), sp.pad)
