"""Contiguous-stream batches for Transformer-XL: consecutive segments of long text.

The token stream is cut into ``rows`` equal streams (rows = batch size x data-parallel ranks);
batch t holds segment t of every stream, so row b of batch t + 1 continues row b of batch t and
a memory carried from one batch to the next sees the text just before. After the last whole
segment the streams start again from their beginning (``first`` is then True: drop the memory).
Batches are a pure function of the index, so a resumed run sees the same data.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import DataError


def segments_per_stream(n_tokens: int, rows: int, seq_len: int) -> int:
    """Whole segments of ``seq_len`` (+1 for the last target) in each of ``rows`` streams."""
    return max(0, (n_tokens // rows - 1) // seq_len)


def stream_batch(tokens: np.ndarray, batch_size: int, seq_len: int, index: int, rank: int = 0,
                 world: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Segment ``index`` (counted over the run: step * grad_accum + micro-step) of this rank's
    ``batch_size`` streams: ``(x, y, first)`` with x, y (batch_size, seq_len) int64 (y is x
    shifted by one) and ``first`` a bool scalar tensor, True at a stream's first segment."""
    if batch_size < 1 or seq_len < 1 or index < 0 or not 0 <= rank < world:
        raise DataError(f"bad stream batch request: batch_size {batch_size}, seq_len {seq_len}, "
                        f"index {index}, rank {rank} of {world}")
    rows = batch_size * world
    n_seg = segments_per_stream(len(tokens), rows, seq_len)
    if n_seg == 0:
        raise DataError(f"{len(tokens)} tokens cannot give {rows} streams of one segment of "
                        f"seq_len + 1 = {seq_len + 1}; lower train.batch_size or train.seq_len, "
                        "or give more text")
    stream_len = len(tokens) // rows
    seg = index % n_seg
    starts = (np.arange(batch_size) + rank * batch_size) * stream_len + seg * seq_len  # (B,)
    idx = starts[:, None] + np.arange(seq_len + 1)[None, :]  # (B, T+1)
    buf = torch.from_numpy(np.asarray(tokens[idx], dtype=np.int64))
    return buf[:, :-1].contiguous(), buf[:, 1:].contiguous(), torch.tensor(seg == 0)


def stream_segments(tokens: np.ndarray, batch_size: int, seq_len: int,
                    max_batches: int | None = None):
    """Evaluation: the consecutive batches of :func:`stream_batch` from the start (at most
    ``max_batches``), each ``(x, y, first)``; fewer rows when the text is short."""
    rows = batch_size
    while rows > 1 and segments_per_stream(len(tokens), rows, seq_len) == 0:
        rows //= 2
    n_seg = segments_per_stream(len(tokens), rows, seq_len)
    for i in range(n_seg if max_batches is None else min(n_seg, max_batches)):
        yield stream_batch(tokens, rows, seq_len, i)
