"""The running batch of a continuous-batching server: one KV cache for all rows, each row's
tokens right-aligned (left padding), with a padding mask and per-row positions.

Every row's real tokens occupy positions ``start[i] .. length - 1`` of the shared cache
(:class:`lmforge.blocks.KVCache`, one ``length`` for all rows). A decoding step feeds one token
per row at position ``length``; row ``i`` sees it at its own position ``length - start[i]``
(RoPE, learned positions) and the mask hides the positions before ``start[i]``. A request
joins after its prompt was prefilled alone (batch 1): its cache is copied in right-aligned,
shifting the running rows right when its prompt is longer than the batch. A finished row leaves
by a gather of the rest (:meth:`KVCache.reorder`); the leading padding all rows share is cut
off when the buffers are reallocated. The buffers are those of ``model.new_cache``: in the
precision ``model.kv_cache_dtype`` says (``lmforge serve --kv-cache``), int8 scales included.

Measured against the alternative (a cache per row, stacked for every step), this copies the
cache only when a request joins or the buffers grow, not at every step.
"""

from __future__ import annotations

import torch
from torch import nn

from ..blocks.kv_cache import KVCache

GROW = 64
"""Positions added (at least) when the shared cache is full."""


class BatchCache:
    """The shared KV cache of the running rows, their first real positions and whether the
    model takes per-row positions (ALiBi looks at distances only: absolute indices do)."""

    bounded = True
    """Prompt and output together stay within the model's context length."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.kv: KVCache | None = None
        self.start = torch.zeros(0, dtype=torch.long)  # (B,) first real position per row
        self.relative_only = getattr(model.cfg, "positional", "") == "alibi"

    @property
    def rows(self) -> int:
        return 0 if self.kv is None else int(self.start.shape[0])

    @property
    def length(self) -> int:
        return 0 if self.kv is None else self.kv.length

    def row_lengths(self) -> torch.Tensor:
        """Tokens each row holds (B,)."""
        return self.length - self.start

    def _realloc(self, rows: int, length: int, room: int) -> KVCache:
        """A new cache of ``rows`` rows holding ``room`` positions, ``length`` of them used."""
        kv = self.model.new_cache(rows, max_len=room)
        kv.length = length
        return kv

    def _copy_rows(self, new: KVCache, shift: int, keep: int) -> None:
        """Copy the last ``keep`` used positions of every running row into ``new`` (rows
        0..B-1), ending at ``self.length + shift``."""
        L = self.length
        for old_t, new_t in zip(self.kv.buffers(), new.buffers()):
            new_t[:self.rows, :, L + shift - keep:L + shift] = old_t[:, :, L - keep:L]

    @torch.no_grad()
    def prefill(self, idx: torch.Tensor) -> tuple[torch.Tensor, KVCache]:
        """Run one prompt (1, T) alone: (next-token logits (1, V), its batch-1 cache)."""
        kv = self.model.new_cache(1, max_len=idx.shape[1])
        return self.model(idx, cache=kv, last_only=True)[:, -1], kv

    def add(self, row: KVCache) -> None:
        """Append a request whose prompt was prefilled alone (a batch-1 cache)."""
        n = row.length
        if self.kv is not None and row.k[0].dtype != self.kv.k[0].dtype:
            raise ValueError(f"a KV cache stored in {row.k[0].dtype} cannot join a batch stored "
                             f"in {self.kv.k[0].dtype} (make both with model.new_cache)")
        if self.kv is None or self.rows == 0:
            self.kv, self.start = row, torch.zeros(1, dtype=torch.long)
            return
        L = self.length
        keep = int(self.row_lengths().max())  # the shared leading padding is dropped
        new_len = max(keep, n)
        shift = new_len - L
        new = self._realloc(self.rows + 1, new_len, max(new_len + GROW, self.kv.max_len + shift))
        self._copy_rows(new, shift, keep)
        for old_t, new_t in zip(row.buffers(), new.buffers()):
            new_t[-1:, :, new_len - n:new_len] = old_t[:, :, :n]
        self.start = torch.cat([self.start + shift, torch.tensor([new_len - n])])
        self.kv = new

    def ensure_room(self) -> None:
        """Make room for one more position (reallocate, cutting shared leading padding)."""
        if self.kv is None or self.kv.length < self.kv.max_len:
            return
        keep = int(self.row_lengths().max())
        shift = keep - self.length  # <= 0: everything moves left
        new = self._realloc(self.rows, keep, keep + GROW)
        self._copy_rows(new, shift, keep)
        self.start = self.start + shift
        self.kv = new

    def keep(self, index: list[int]) -> None:
        """Keep only rows ``index`` (the others finished)."""
        if not index:
            self.kv, self.start = None, torch.zeros(0, dtype=torch.long)
            return
        if index == list(range(self.rows)):
            return
        idx = torch.tensor(index, dtype=torch.long)
        self.kv.reorder(idx.to(self.kv.k[0].device))
        self.start = self.start[idx]

    @torch.no_grad()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row (B,); the next-token logits (B, V)."""
        self.ensure_room()
        kv = self.kv
        device = kv.k[0].device
        L = kv.length
        start = self.start.to(device)
        mask = torch.arange(L + 1, device=device)[None, :] >= start[:, None]  # (B, L+1)
        positions = None if self.relative_only else (L - start)[:, None]  # (B, 1)
        logits = self.model(tokens[:, None].to(device), positions=positions, padding_mask=mask,
                            cache=kv, last_only=True)
        return logits[:, -1]  # (B, V)
