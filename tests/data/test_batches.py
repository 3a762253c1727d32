"""Tests for lmforge.data.batches: deterministic random training windows and eval windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lmforge.data import eval_batches, n_eval_windows, sample_batch
from lmforge.errors import DataError


@pytest.fixture()
def tokens(tmp_path: Path) -> np.ndarray:
    """A memory-mapped uint16 stream 0, 1, 2, ... so each window's start is its first value."""
    path = tmp_path / "tokens.bin"
    np.arange(1000, dtype=np.uint16).tofile(path)
    return np.memmap(path, dtype=np.uint16, mode="r")


def test_shapes_dtype_and_shift(tokens: np.ndarray) -> None:
    x, y = sample_batch(tokens, batch_size=4, seq_len=16, seed=0, step=0)
    assert x.shape == y.shape == (4, 16)
    assert x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    for row_x, row_y in zip(x, y):
        start = int(row_x[0])
        assert torch.equal(row_x, torch.arange(start, start + 16))  # a contiguous window
        assert torch.equal(row_y, torch.arange(start + 1, start + 17))
        assert 0 <= start <= len(tokens) - 17


def test_batches_are_a_pure_function_of_seed_step_micro_step_rank(tokens: np.ndarray) -> None:
    def batch(**kw):
        args = dict(seed=1, step=5, micro_step=0, rank=0) | kw
        return sample_batch(tokens, 8, 32, **args)[0]

    assert torch.equal(batch(), batch())  # same arguments -> same batch, no global RNG state
    torch.manual_seed(123)
    np.random.seed(123)
    assert torch.equal(batch(), batch())
    for change in (dict(step=6), dict(seed=2), dict(micro_step=1), dict(rank=1)):
        assert not torch.equal(batch(), batch(**change)), change


def test_windows_cover_the_whole_range_over_many_steps(tokens: np.ndarray) -> None:
    starts = torch.cat([sample_batch(tokens, 16, 8, seed=0, step=s)[0][:, 0] for s in range(200)])
    assert int(starts.min()) == 0 and int(starts.max()) == len(tokens) - 9  # last valid start


def test_exactly_seq_len_plus_one_tokens_works_and_fewer_fails() -> None:
    tokens = np.arange(9, dtype=np.uint16)
    x, y = sample_batch(tokens, 2, 8, seed=0, step=0)
    assert torch.equal(x[0], torch.arange(8)) and torch.equal(y[0], torch.arange(1, 9))
    with pytest.raises(DataError, match=r"only 9 tokens.*seq_len \+ 1 = 10.*seq_len"):
        sample_batch(tokens, 2, 9, seed=0, step=0)
    with pytest.raises(DataError, match="seed"):
        sample_batch(tokens, 2, 4, seed=-1, step=0)


def test_eval_batches_cover_all_non_overlapping_windows(tokens: np.ndarray) -> None:
    batches = list(eval_batches(tokens, batch_size=8, seq_len=10))
    n_win = n_eval_windows(len(tokens), 10)
    assert n_win == 99
    assert sum(len(x) for x, _ in batches) == n_win
    assert [len(x) for x, _ in batches][-1] == n_win % 8  # last batch is smaller
    starts = torch.cat([x[:, 0] for x, _ in batches])
    assert torch.equal(starts, torch.arange(0, 990, 10))
    for x, y in batches:
        assert x.shape[1] == 10 and torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(y[:, -1], x[:, -1] + 1)


def test_eval_batches_limit_spreads_windows_evenly_and_is_deterministic(tokens: np.ndarray) -> None:
    a = list(eval_batches(tokens, batch_size=4, seq_len=10, max_batches=2))
    b = list(eval_batches(tokens, batch_size=4, seq_len=10, max_batches=2))
    assert len(a) == 2 and all(x.shape == (4, 10) for x, _ in a)
    assert all(torch.equal(xa, xb) for (xa, _), (xb, _) in zip(a, b))
    starts = torch.cat([x[:, 0] for x, _ in a]).tolist()
    assert starts == sorted(set(starts)) and starts[0] == 0
    assert starts[-1] >= 800  # reaches the end of the split, not just its beginning
    assert all(s % 10 == 0 for s in starts)  # aligned, hence non-overlapping
    # a limit larger than what exists gives every window once
    assert sum(len(x) for x, _ in eval_batches(tokens, 4, 10, max_batches=1000)) == 99


def test_eval_batches_too_small_split() -> None:
    with pytest.raises(DataError, match="validation split has only 5 tokens"):
        list(eval_batches(np.arange(5, dtype=np.uint16), 2, 8))
