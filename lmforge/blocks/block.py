"""A transformer layer: attention and feed-forward, each wrapped in a residual connection with
normalisation before (pre-norm, GPT-2/Llama) or after (post-norm, original Transformer/BERT)."""

from __future__ import annotations

import torch
from torch import nn

from .attention import MultiHeadAttention
from .feedforward import FeedForward


class TransformerBlock(nn.Module):
    def __init__(self, attn: MultiHeadAttention, ff: FeedForward, norm1: nn.Module,
                 norm2: nn.Module, prenorm: bool = True, dropout: float = 0.0,
                 cross_attn: MultiHeadAttention | None = None, norm_cross: nn.Module | None = None):
        super().__init__()
        self.attn, self.ff = attn, ff
        self.norm1, self.norm2 = norm1, norm2
        self.cross_attn, self.norm_cross = cross_attn, norm_cross
        self.prenorm = prenorm
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def _residual(self, x, norm, fn):
        if self.prenorm:
            return x + self.drop(fn(norm(x)))
        return norm(x + self.drop(fn(x)))

    def forward(self, x: torch.Tensor, *, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None, cross_out: list | None = None,
                **attn_kw) -> torch.Tensor:
        # x: (B, T, C); attn_kw: positions, mask, bias, is_causal, cache, layer, attn_out
        x = self._residual(x, self.norm1, lambda h: self.attn(h, **attn_kw))
        if self.cross_attn is not None:
            kw = {k: attn_kw.get(k) for k in ("cache", "layer")}
            x = self._residual(x, self.norm_cross, lambda h: self.cross_attn(
                h, context=context, mask=context_mask, attn_out=cross_out, **kw))
        return self._residual(x, self.norm2, self.ff)
