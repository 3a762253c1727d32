"""Batches of token windows for language-model training and evaluation.

Training batches are random windows (nanoGPT style) whose offsets are a pure function of
``(seed, step, micro_step, rank)``, so a resumed run sees exactly the same batches.
Evaluation batches are fixed, evenly spaced, non-overlapping windows.
"""

from __future__ import annotations

import functools
from typing import Iterator

import numpy as np
import torch

from ..errors import DataError


def _check_sizes(batch_size: int, seq_len: int) -> None:
    if batch_size < 1:
        raise DataError(f"batch_size must be at least 1, got {batch_size}")
    if seq_len < 1:
        raise DataError(f"seq_len must be at least 1, got {seq_len}")


def _too_few(n: int, seq_len: int, what: str) -> DataError:
    return DataError(
        f"the {what} has only {n} tokens but one sequence needs seq_len + 1 = {seq_len + 1}; "
        f"make train.seq_len (the model context) smaller, or give more data"
    )


def _windows(tokens: np.ndarray, offsets: np.ndarray, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x = tokens[i:i+T], y = tokens[i+1:i+T+1] for each offset i, as int64 tensors."""
    idx = offsets[:, None] + np.arange(seq_len + 1)[None, :]  # (B, T+1)
    buf = torch.from_numpy(np.asarray(tokens[idx], dtype=np.int64))  # (B, T+1)
    x = buf[:, :-1].contiguous()  # (B, T)
    y = buf[:, 1:].contiguous()  # (B, T)
    return x, y


def batch_offsets(n_tokens: int, batch_size: int, seq_len: int, seed: int, step: int, micro_step: int = 0, rank: int = 0) -> np.ndarray:
    """The window start offsets :func:`sample_batch` uses: (B,) int64 in ``[0, n_tokens - seq_len - 1]``."""
    for name, v in (("seed", seed), ("step", step), ("micro_step", micro_step), ("rank", rank)):
        if int(v) < 0:
            raise DataError(f"{name} must be non-negative, got {v}")
    rng = np.random.default_rng([int(seed), int(step), int(micro_step), int(rank)])
    return rng.integers(0, n_tokens - seq_len, size=batch_size, dtype=np.int64)  # (B,)


def sample_batch(
    tokens: np.ndarray,
    batch_size: int,
    seq_len: int,
    seed: int,
    step: int,
    micro_step: int = 0,
    rank: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random training batch ``(x, y)``, each ``(batch_size, seq_len)`` int64; y is x shifted by one.

    The offsets depend only on ``(seed, step, micro_step, rank)`` and ``len(tokens)``.
    """
    _check_sizes(batch_size, seq_len)
    n = len(tokens)
    if n < seq_len + 1:
        raise _too_few(n, seq_len, "training split")
    offsets = batch_offsets(n, batch_size, seq_len, seed, step, micro_step, rank)  # (B,)
    return _windows(tokens, offsets, seq_len)


def n_eval_windows(n_tokens: int, seq_len: int) -> int:
    """How many non-overlapping (x, y) windows of ``seq_len`` fit in ``n_tokens`` tokens."""
    return max(0, (n_tokens - 1) // seq_len)


def eval_batches(
    tokens: np.ndarray,
    batch_size: int,
    seq_len: int,
    max_batches: int | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Deterministic evaluation batches of non-overlapping windows ``(x, y)``, each ``(b, seq_len)``.

    All windows are used when ``max_batches`` is None or they fit; otherwise
    ``max_batches * batch_size`` windows spread evenly over the split. The last batch may be
    smaller than ``batch_size``.
    """
    _check_sizes(batch_size, seq_len)
    n_win = n_eval_windows(len(tokens), seq_len)
    if n_win == 0:
        raise _too_few(len(tokens), seq_len, "validation split")
    chosen = np.arange(n_win, dtype=np.int64)
    if max_batches is not None:
        if max_batches < 1:
            raise DataError(f"max_batches must be at least 1 or None, got {max_batches}")
        total = max_batches * batch_size
        if n_win > total:
            chosen = (np.arange(total, dtype=np.int64) * n_win) // total  # distinct, evenly spread
    offsets = chosen * seq_len
    for start in range(0, len(offsets), batch_size):
        yield _windows(tokens, offsets[start : start + batch_size], seq_len)


@functools.lru_cache(maxsize=4)
def _epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch, 0xE90C]).permutation(n)


def epoch_indices(n: int, batch_size: int, seed: int, offset: int) -> np.ndarray:
    """Rows ``offset .. offset + batch_size - 1`` of an endless stream of epochs, each a seeded
    permutation of ``range(n)``: every row is seen once per epoch, and the batch at a given
    offset is a pure function of (n, seed, offset), so a resumed run sees the same batches.
    For training step s, micro-step m, rank r: offset = ((s * accum + m) * world + r) * batch."""
    if n < 1 or batch_size < 1:
        raise DataError(f"need at least one row and batch_size >= 1, got {n} rows, {batch_size}")
    out, pos = [], offset
    while len(out) < batch_size:
        epoch, i = divmod(pos, n)
        take = _epoch_permutation(n, seed, epoch)[i:i + batch_size - len(out)]
        out.extend(take.tolist())
        pos += len(take)
    return np.asarray(out, dtype=np.int64)
