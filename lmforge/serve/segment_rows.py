"""The running rows of a Transformer-XL model in the server (``model.memory_length > 0``): each
request keeps its own segment memory (:class:`~lmforge.blocks.relative.XLMemory`) instead of a
place in a shared KV cache, exactly as :func:`lmforge.inference.generate_tokens` does alone.

The prompt (any length: an XL model has no context limit) is read in segments of the context
length with the memory carried; each new token joins the current segment and a full segment
becomes memory. A decoding step runs the rows whose memories are in the same phase (the same
memory and pending lengths, e.g. the ``n`` choices of one prompt) as one batch, and the groups
one after another: rows in different phases see key sets of different lengths, which one
batched call would have to pad and mask. Same interface as :class:`.batch.BatchCache`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..blocks.relative import XLMemory
from ..inference.generate import feed_xl


def _phase(mem: XLMemory) -> tuple[int, int]:
    """(memory positions, pending positions): rows alike in both batch together."""
    return tuple(0 if t is None else t.shape[1] for t in (mem.mem[0], mem.pending[0]))


def _stack(mems: list[XLMemory]) -> XLMemory:
    """One memory of len(mems) rows from batch-1 memories in the same phase."""
    first = mems[0]
    out = XLMemory(len(first.mem), first.length, first.segment)
    for layer in range(len(first.mem)):
        for name in ("mem", "pending"):
            parts = [getattr(m, name)[layer] for m in mems]
            getattr(out, name)[layer] = None if parts[0] is None else torch.cat(parts, 0)
    return out


def _row(mem: XLMemory, i: int) -> XLMemory:
    """Row ``i`` of a batched memory, as a batch-1 memory."""
    out = XLMemory(len(mem.mem), mem.length, mem.segment)
    out.mem = [None if t is None else t[i:i + 1] for t in mem.mem]
    out.pending = [None if t is None else t[i:i + 1] for t in mem.pending]
    return out


class SegmentRows:
    """The running rows of an XL model: one batch-1 :class:`XLMemory` per row."""

    bounded = False
    """No context limit: the prompt and the output may be of any length."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.memories: list[XLMemory] = []

    @property
    def rows(self) -> int:
        return len(self.memories)

    @torch.no_grad()
    def prefill(self, idx: torch.Tensor) -> tuple[torch.Tensor, XLMemory]:
        """Read one prompt (1, T) in segments: (next-token logits (1, V), its memory)."""
        mem = self.model.new_memory()
        return feed_xl(self.model, mem, idx), mem

    def add(self, mem: XLMemory) -> None:
        """Append a request whose prompt was read by :meth:`prefill`."""
        self.memories.append(mem)

    def keep(self, index: list[int]) -> None:
        """Keep only rows ``index`` (the others finished)."""
        self.memories = [self.memories[i] for i in index]

    @torch.no_grad()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row (B,); the next-token logits (B, V)."""
        groups: dict[tuple[int, int], list[int]] = {}
        for i, m in enumerate(self.memories):
            groups.setdefault(_phase(m), []).append(i)
        device = next(self.model.parameters()).device
        out: list[torch.Tensor | None] = [None] * self.rows
        for rows in groups.values():
            if len(rows) == 1:  # alone in its phase: its own memory, updated in place
                out[rows[0]] = feed_xl(self.model, self.memories[rows[0]],
                                       tokens[rows][:, None].to(device))[0]
                continue
            mem = _stack([self.memories[i] for i in rows])  # a copy: b rows in one batch
            logits = feed_xl(self.model, mem, tokens[rows][:, None].to(device))  # (b, V)
            for j, i in enumerate(rows):
                self.memories[i], out[i] = _row(mem, j), logits[j]
        return torch.stack(out)  # (B, V)
