"""T5's relative position bias (Raffel et al. 2020): a learned scalar per head and per
relative-distance *bucket*, added to the attention scores of every self-attention layer of a
stack (the table belongs to the stack; Hugging Face keeps it in the first layer).

Distances key - query are put in buckets: half of the buckets hold the exact distances
0 .. n/2 - 1, the other half log-spaced ranges up to ``max_distance`` (anything farther shares
the last bucket). A bidirectional stack (the encoder) splits the buckets between keys before
and keys after the query; a causal one (the decoder) sees only keys at or before the query,
so all buckets go to those. Cross-attention has no position bias.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def relative_buckets(rel: torch.Tensor, bidirectional: bool, n_buckets: int,
                     max_distance: int) -> torch.Tensor:
    """Bucket of each relative position ``rel`` = key - query (any shape, long) -> same shape,
    in [0, n_buckets). The same operations, in the same order, as transformers'
    ``T5Attention._relative_position_bucket``, so the buckets agree exactly."""
    out = torch.zeros_like(rel)
    if bidirectional:
        n_buckets //= 2
        out += (rel > 0).to(torch.long) * n_buckets  # keys after the query: upper half
        rel = torch.abs(rel)
    else:
        rel = -torch.min(rel, torch.zeros_like(rel))  # later keys (masked anyway) -> 0
    max_exact = n_buckets // 2
    is_small = rel < max_exact
    large = max_exact + (torch.log(rel.float() / max_exact) / math.log(max_distance / max_exact)
                         * (n_buckets - max_exact)).to(torch.long)
    large = torch.min(large, torch.full_like(large, n_buckets - 1))
    return out + torch.where(is_small, rel, large)


class T5RelativeBias(nn.Module):
    """The learned bias table ``weight`` (n_buckets, H) of one stack."""

    def __init__(self, n_head: int, n_buckets: int = 32, max_distance: int = 128,
                 bidirectional: bool = True):
        super().__init__()
        self.n_buckets, self.max_distance = n_buckets, max_distance
        self.bidirectional = bidirectional
        self.weight = nn.Parameter(torch.zeros(n_buckets, n_head))

    def forward(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        """Score bias for queries at ``q_pos`` (Tq,) and keys at ``k_pos`` (Tk,) -> (H, Tq, Tk)."""
        rel = k_pos[None, :].long() - q_pos[:, None].long()  # (Tq, Tk)
        buckets = relative_buckets(rel, self.bidirectional, self.n_buckets, self.max_distance)
        return nn.functional.embedding(buckets, self.weight).permute(2, 0, 1)  # (H, Tq, Tk)
