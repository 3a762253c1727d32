"""Sentence pairs once tokenised: filtering, token-count batching, collation.

Filtering
    :func:`filter_pairs` drops pairs that are empty, too long or have a bad length ratio, after
    tokenisation, and returns a :class:`FilterReport` that says what was dropped and where.

Batching
    :class:`TokenBatches` groups pairs of similar length into batches holding at most
    ``max_tokens`` padded positions per side; the batches are fixed, their order is a seeded
    permutation per epoch, and batch ``i`` is a pure function of ``(lengths, max_tokens, seed, i)``
    so a resumed run sees exactly the same batches.
    :func:`collate` pads one batch into the tensors the model and loss need.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..tokenizers.special import IGNORE_INDEX

_MAX_EXAMPLES = 5


# --------------------------------------------------------------------------------------------
# Filtering
# --------------------------------------------------------------------------------------------


@dataclass
class FilterReport:
    """What :func:`filter_pairs` kept and dropped. Each dropped pair is counted once, under the
    first reason that applies (empty, then too long, then bad ratio); ``examples`` holds the
    locations of the first few dropped pairs."""

    kept: int
    empty: int
    too_long: int
    bad_ratio: int
    examples: list[str] = field(default_factory=list)
    max_len: int = 0
    max_ratio: float = 0.0

    @property
    def total(self) -> int:
        return self.kept + self.dropped

    @property
    def dropped(self) -> int:
        return self.empty + self.too_long + self.bad_ratio

    def __str__(self) -> str:
        head = f"kept {self.kept:,} of {self.total:,} pairs"
        if self.dropped == 0:
            return f"{head}; dropped none"
        parts = []
        if self.empty:
            parts.append(f"{self.empty:,} empty")
        if self.too_long:
            parts.append(f"{self.too_long:,} longer than {self.max_len:,} tokens")
        if self.bad_ratio:
            parts.append(f"{self.bad_ratio:,} with a length ratio above {self.max_ratio:g}")
        more = ", ..." if self.dropped > len(self.examples) else ""
        eg = f" (e.g. {', '.join(self.examples)}{more})" if self.examples else ""
        return f"{head}; dropped {', '.join(parts)}{eg}"


def filter_pairs(
    src_ids: Sequence[Sequence[int]],
    tgt_ids: Sequence[Sequence[int]],
    where: Sequence[str],
    *,
    max_len: int,
    max_ratio: float,
) -> tuple[list[int], FilterReport]:
    """Indices of the pairs to keep, and a report of the rest.

    Pass the raw token ids (before adding BOS/EOS). A pair is dropped when either side is empty,
    either side has more than ``max_len`` tokens, or ``max(len) / min(len) > max_ratio``
    (``max_ratio <= 0`` turns the ratio check off). Raises DataError when nothing is kept.
    """
    n = len(src_ids)
    if len(tgt_ids) != n or len(where) != n:
        raise DataError(
            f"filter_pairs needs one target and one location per source, got {n} sources, "
            f"{len(tgt_ids)} targets, {len(where)} locations"
        )
    if max_len < 1:
        raise ConfigError(f"max_len must be at least 1 token, got {max_len}")
    kept: list[int] = []
    empty = too_long = bad_ratio = 0
    examples: list[str] = []
    for i in range(n):
        ls, lt = len(src_ids[i]), len(tgt_ids[i])
        if ls == 0 or lt == 0:
            empty += 1
        elif ls > max_len or lt > max_len:
            too_long += 1
        elif max_ratio > 0 and max(ls, lt) / min(ls, lt) > max_ratio:
            bad_ratio += 1
        else:
            kept.append(i)
            continue
        if len(examples) < _MAX_EXAMPLES:
            examples.append(where[i])
    report = FilterReport(kept=len(kept), empty=empty, too_long=too_long, bad_ratio=bad_ratio,
                          examples=examples, max_len=max_len, max_ratio=float(max_ratio))
    if n and not kept:
        raise DataError(
            f"every sentence pair was filtered out: {report}; raise the maximum length or "
            f"length ratio (max_ratio <= 0 turns the ratio check off), or check the data"
        )
    return kept, report


# --------------------------------------------------------------------------------------------
# Batching
# --------------------------------------------------------------------------------------------


class TokenBatches:
    """Batches of pairs of similar length, each with at most ``max_tokens`` padded positions
    per side: ``len(batch) * max(longest source, longest target) <= max_tokens`` (a single pair
    longer than that forms a batch of its own).

    Give the lengths as they will be in the batch tensors (with :func:`collate`: raw length + 1
    on each side, for EOS / BOS). Pairs are sorted by length, ties broken at random by ``seed``,
    and cut greedily; the batches are the same every epoch, and their order is a permutation
    seeded by ``(seed, epoch)`` (or the sorted order when ``shuffle`` is False). ``batch(i)``
    for the global batch counter ``i`` (epoch ``i // len(self)``) is a pure function of the
    lengths, ``max_tokens``, ``seed`` and ``i``, so a resumed run sees the same batches.
    """

    def __init__(self, src_lens: Sequence[int] | np.ndarray, tgt_lens: Sequence[int] | np.ndarray,
                 max_tokens: int, seed: int, shuffle: bool = True) -> None:
        src = np.asarray(src_lens, dtype=np.int64).reshape(-1)  # (N,)
        tgt = np.asarray(tgt_lens, dtype=np.int64).reshape(-1)  # (N,)
        if len(src) != len(tgt):
            raise DataError(f"need one target length per source length, got {len(src)} and {len(tgt)}")
        if len(src) == 0:
            raise DataError("no sentence pairs to batch; check that filtering kept some pairs")
        if int(max_tokens) < 1:
            raise ConfigError(f"max_tokens must be at least 1, got {max_tokens}")
        if int(seed) < 0:
            raise ConfigError(f"seed must be non-negative, got {seed}")
        if int(min(src.min(), tgt.min())) < 1:
            bad = int(np.flatnonzero((src < 1) | (tgt < 1))[0])
            raise DataError(
                f"pair {bad} has a sequence of length {min(src[bad], tgt[bad])}; lengths must be at "
                f"least 1 (count the EOS/BOS token collate adds, and filter empty pairs first)"
            )
        self.src_lens, self.tgt_lens = src, tgt
        self.max_tokens, self.seed, self.shuffle = int(max_tokens), int(seed), bool(shuffle)
        self._batches = self._cut()
        self._perm_epoch = -1
        self._perm = np.arange(len(self._batches))

    def _cut(self) -> list[np.ndarray]:
        src, tgt = self.src_lens, self.tgt_lens
        longest = np.maximum(src, tgt)  # (N,)
        tie = np.random.default_rng([self.seed, 0xB0C7]).random(len(src))  # (N,)
        order = np.lexsort((tie, src + tgt, longest))  # by longest side, then total, then random
        batches: list[np.ndarray] = []
        start, cur = 0, 0
        for pos, i in enumerate(order.tolist()):
            width = max(cur, int(longest[i]))
            if pos > start and (pos - start + 1) * width > self.max_tokens:
                batches.append(order[start:pos].copy())
                start, width = pos, int(longest[i])
            cur = width
        batches.append(order[start:].copy())
        return batches

    def __len__(self) -> int:
        """Batches per epoch."""
        return len(self._batches)

    @property
    def n_pairs(self) -> int:
        return len(self.src_lens)

    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return self._perm
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch, 0xE90C]).permutation(len(self._batches))
            self._perm_epoch = epoch
        return self._perm

    def batch(self, i: int) -> np.ndarray:
        """Pair indices (int64) of global batch ``i``: batch ``i % len(self)`` of epoch ``i // len(self)``."""
        if int(i) < 0:
            raise DataError(f"batch counter must be non-negative, got {i}")
        epoch, pos = divmod(int(i), len(self._batches))
        return self._batches[int(self._order(epoch)[pos])].copy()

    def tokens(self, i: int) -> int:
        """Real (non-padding) tokens in global batch ``i``, source and target together."""
        idx = self.batch(i)
        return int(self.src_lens[idx].sum() + self.tgt_lens[idx].sum())

    def padding_fraction(self) -> float:
        """Padded positions / all positions over one epoch, source and target together."""
        real = positions = 0
        for idx in self._batches:
            s, t = self.src_lens[idx], self.tgt_lens[idx]
            real += int(s.sum() + t.sum())
            positions += len(idx) * int(s.max() + t.max())
        return 1.0 - real / positions


def collate(
    src_ids: Sequence[Sequence[int]],
    tgt_ids: Sequence[Sequence[int]],
    *,
    pad_id: int,
    bos_id: int,
    eos_id: int,
) -> dict[str, torch.Tensor]:
    """Pad a batch of raw token-id pairs into model inputs (all ``long`` unless noted):

    * ``src``      (B, S): source + [eos], padded with ``pad_id``
    * ``src_mask`` (B, S) bool: True at real source tokens
    * ``tgt_in``   (B, T): [bos] + target, padded with ``pad_id`` (decoder input)
    * ``tgt_out``  (B, T): target + [eos], padded with -100 (labels; -100 is ignored by the loss)
    * ``tgt_mask`` (B, T) bool: True at real ``tgt_in`` positions
    """
    if len(src_ids) != len(tgt_ids):
        raise DataError(f"collate needs one target per source, got {len(src_ids)} and {len(tgt_ids)}")
    if len(src_ids) == 0:
        raise DataError("collate got an empty batch; a batch needs at least one pair")
    b = len(src_ids)
    s_len = [len(x) + 1 for x in src_ids]
    t_len = [len(y) + 1 for y in tgt_ids]
    s_max, t_max = max(s_len), max(t_len)
    src = torch.full((b, s_max), pad_id, dtype=torch.long)  # (B, S)
    tgt_in = torch.full((b, t_max), pad_id, dtype=torch.long)  # (B, T)
    tgt_out = torch.full((b, t_max), IGNORE_INDEX, dtype=torch.long)  # (B, T)
    for r, (x, y) in enumerate(zip(src_ids, tgt_ids)):
        x = torch.as_tensor(list(x), dtype=torch.long)
        y = torch.as_tensor(list(y), dtype=torch.long)
        src[r, : len(x)] = x
        src[r, len(x)] = eos_id
        tgt_in[r, 0] = bos_id
        tgt_in[r, 1 : len(y) + 1] = y
        tgt_out[r, : len(y)] = y
        tgt_out[r, len(y)] = eos_id
    src_mask = torch.arange(s_max)[None, :] < torch.tensor(s_len)[:, None]  # (B, S)
    tgt_mask = torch.arange(t_max)[None, :] < torch.tensor(t_len)[:, None]  # (B, T)
    return {"src": src, "src_mask": src_mask, "tgt_in": tgt_in, "tgt_out": tgt_out, "tgt_mask": tgt_mask}


__all__ = ["FilterReport", "TokenBatches", "collate", "filter_pairs"]
