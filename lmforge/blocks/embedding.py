"""Token embeddings: a lookup table from token ids to vectors, optionally scaled by sqrt(C).

Weight tying (sharing this table with the output projection) is done by the model that owns
both, by pointing the head's weight at ``TokenEmbedding.weight``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class TokenEmbedding(nn.Module):
    def __init__(self, vocab_size: int, dim: int, scale: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab_size, dim))
        nn.init.normal_(self.weight, std=0.02)
        self.scale = math.sqrt(dim) if scale else 1.0

    def forward(self, idx: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, C)
        x = nn.functional.embedding(idx, self.weight)
        return x * self.scale if self.scale != 1.0 else x
