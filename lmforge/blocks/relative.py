"""Transformer-XL (Dai et al. 2019): relative positional encoding and segment memory.

Relative scores. For query i and key j (distance i - j), XL's score is the sum of four terms

    (a) q_i·k_j   (b) q_i·W_r R_{i-j}   (c) u·k_j   (d) v·W_r R_{i-j}

with R the sinusoidal table of distances, W_r a per-layer projection (``r_proj`` of the
attention layer) and u, v two learned vectors per head shared by all layers (the "global"
content and position biases). lmforge computes (a) + (c) by handing the backend the query
q + u, and (b) + (d) = (q + v)·W_r R_{i-j} as an additive per-call ``bias`` (divided by
sqrt(d), like the content part), so every backend that reads ``bias`` and ``mask`` runs it.

Memory. With ``model.memory_length = M > 0`` an :class:`XLMemory` keeps, for each layer,
the inputs of that layer (the residual stream) on the last M positions of the previous
segments, detached from the graph; the layer attends over [memory; current segment].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class RelativeContext:
    """What each layer needs for relative attention in one forward pass."""

    table: torch.Tensor
    """(L, C) sinusoidal vectors of distances 0..L-1; L >= the number of keys."""
    u: torch.Tensor
    """(H, D) global content bias."""
    v: torch.Tensor
    """(H, D) global position bias."""


def relative_position_scores(qv: torch.Tensor, r: torch.Tensor, offset: int) -> torch.Tensor:
    """Position part of XL's score, (q_i + v)·r_{i-j}, for queries at positions
    offset..offset+Tq-1 and keys at 0..K-1.

    qv (B, H, Tq, D) = q + v; r (H, K, D): projected vectors of distances 0..K-1.
    Returns (B, H, Tq, K). Entries of future keys (j > i) hold the distance-0 value; the causal
    mask removes them."""
    B, H, Tq, _ = qv.shape
    K = r.shape[-2]
    raw = qv @ r.transpose(-2, -1)  # (B, H, Tq, K): column d = distance d
    q_pos = torch.arange(Tq, device=qv.device)[:, None] + offset  # (Tq, 1)
    dist = (q_pos - torch.arange(K, device=qv.device)).clamp(0, K - 1)  # (Tq, K)
    return raw.gather(-1, dist.expand(B, H, Tq, K))  # (B, H, Tq, K)


def relative_bias(q: torch.Tensor, r_proj: torch.nn.Module, rel: RelativeContext,
                  n_keys: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(q + u, bias): the query to hand the backend and the additive position bias
    (q + v)·W_r R_{i-j} / sqrt(D), for q (B, H, Tq, D) being the last Tq of ``n_keys``
    positions. Returns ((B, H, Tq, D), (B, H, Tq, n_keys))."""
    H, D = q.shape[1], q.shape[-1]
    table = rel.table[:n_keys].to(r_proj.weight.dtype)  # (K, C)
    r = r_proj(table).view(n_keys, H, D).transpose(0, 1)  # (H, K, D)
    u = rel.u.to(q.dtype)[:, None]  # (H, 1, D)
    v = rel.v.to(q.dtype)[:, None]
    bias = relative_position_scores(q + v, r.to(q.dtype), n_keys - q.shape[-2])
    return q + u, bias / math.sqrt(D)


class XLMemory:
    """Per-layer hidden states of earlier segments for Transformer-XL (like a KV cache, the
    model updates it in place: ``model(x, memory=mem)``).

    ``mem[l]`` (B, m, C), m <= ``length``: inputs of layer l at the last m positions of the
    finished segments. ``pending[l]`` (B, p, C): those of the current, unfinished segment
    (generation feeds a segment a few tokens at a time); a query attends over
    [mem; pending; itself and the earlier new tokens]. When ``segment`` positions are pending
    they become memory (the last ``length`` kept). Everything stored is detached: no gradient
    flows into an earlier segment."""

    def __init__(self, n_layer: int, length: int, segment: int):
        if length < 0 or segment < 1:
            raise ValueError(f"memory length must be >= 0 and segment >= 1, got {length}, {segment}")
        self.length, self.segment = length, segment
        self.mem: list[torch.Tensor | None] = [None] * n_layer
        self.pending: list[torch.Tensor | None] = [None] * n_layer

    def reset(self) -> None:
        """Forget everything (a new stream starts)."""
        self.mem = [None] * len(self.mem)
        self.pending = [None] * len(self.pending)

    @staticmethod
    def _len(t: torch.Tensor | None) -> int:
        return 0 if t is None else t.shape[1]

    @property
    def held(self) -> int:
        """Positions a new query sees before the new tokens (memory + pending)."""
        return self._len(self.mem[0]) + self._len(self.pending[0])

    @property
    def room(self) -> int:
        """New tokens the current segment still takes."""
        return self.segment - self._len(self.pending[0])

    def batch(self) -> int | None:
        t = self.mem[0] if self.mem[0] is not None else self.pending[0]
        return None if t is None else t.shape[0]

    def states(self, layer: int) -> torch.Tensor | None:
        """(B, held, C): what layer ``layer`` attends to before the new tokens, or None."""
        parts = [t for t in (self.mem[layer], self.pending[layer]) if t is not None]
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def push(self, inputs: list[torch.Tensor]) -> None:
        """Record each layer's input (B, T, C) of the forward pass just run (detached)."""
        for i, x in enumerate(inputs):
            p = x.detach() if self.pending[i] is None else torch.cat([self.pending[i], x.detach()], 1)
            while p.shape[1] >= self.segment:  # a finished segment becomes memory
                seg, p = p[:, :self.segment], p[:, self.segment:]
                if self.length:
                    m = seg if self.mem[i] is None else torch.cat([self.mem[i], seg], dim=1)
                    self.mem[i] = m[:, -self.length:]
            self.pending[i] = p if p.shape[1] else None
