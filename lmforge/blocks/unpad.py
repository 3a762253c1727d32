"""Padding removal ("unpadding"): run the token-wise work of a padded batch on its real tokens
only.

In a padded (B, T) batch every linear layer, norm and feed-forward would also process the
padding positions, whose outputs are thrown away. Everything in a transformer block except
attention treats each token on its own, so the backbone packs the real tokens into (N, C)
rows, and only attention puts them back into the (B, T) layout it needs (with the padding
mask) and packs its output again. With half the batch padding, half the matrix products are
saved; the outputs at real positions are the same numbers (FasterTransformer's "remove
padding", BetterTransformer's nested tensors).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MIN_PADDING = 1 / 16
"""Pack only batches with at least this share of padding: with less, copying the rows into and
out of the (B, T) layout for attention costs about what the skipped rows save."""


@dataclass(frozen=True)
class Unpadded:
    """Where the N real tokens of a padded (B, T) batch sit among its B * T positions."""

    index: torch.Tensor  # (N,) flat positions b * T + t of the real tokens, ascending
    batch: int
    length: int

    @classmethod
    def from_mask(cls, padding_mask: torch.Tensor,  # (B, T) bool, True = real token
                  min_padding: float = MIN_PADDING) -> Unpadded | None:
        """The packing of ``padding_mask``, or None when it has too little padding to pay."""
        B, T = padding_mask.shape
        index = padding_mask.reshape(-1).nonzero().squeeze(1)  # (N,)
        if index.numel() > (1 - min_padding) * B * T:
            return None
        return cls(index, B, T)

    def pack(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, ...) -> (N, ...)
        return x.reshape(self.batch * self.length, *x.shape[2:]).index_select(0, self.index)

    def pad(self, x: torch.Tensor) -> torch.Tensor:  # (N, ...) -> (B, T, ...), zeros at padding
        out = x.new_zeros(self.batch * self.length, *x.shape[1:])
        return out.index_copy(0, self.index, x).view(self.batch, self.length, *x.shape[1:])
