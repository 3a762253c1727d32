"""A transformer layer: attention and feed-forward, each wrapped in a residual connection with
normalisation before (pre-norm, GPT-2/Llama) or after (post-norm, original Transformer/BERT).

The two branches are also offered one by one (:meth:`TransformerBlock.attn_branch`,
:meth:`TransformerBlock.ff_branch`) for reversible stacks (``reversible.py``), and the
feed-forward can run over ``ff_chunks`` pieces of the sequence (Reformer's chunking)."""

from __future__ import annotations

import torch
from torch import nn

from .attention import MultiHeadAttention
from .feedforward import FeedForward


def chunked(fn, x: torch.Tensor, chunks: int) -> torch.Tensor:
    """``fn`` applied to ``chunks`` pieces of x along the sequence (dim -2), concatenated: the
    same values as ``fn(x)`` for a position-wise ``fn``, with a hidden activation only one
    piece large at a time (when nothing keeps it for the backward: inference, reversible
    layers)."""
    if chunks <= 1 or x.shape[-2] <= 1:
        return fn(x)
    return torch.cat([fn(piece) for piece in x.chunk(chunks, dim=-2)], dim=-2)


class TransformerBlock(nn.Module):
    def __init__(self, attn: MultiHeadAttention, ff: FeedForward, norm1: nn.Module,
                 norm2: nn.Module, prenorm: bool = True, dropout: float = 0.0,
                 cross_attn: MultiHeadAttention | None = None, norm_cross: nn.Module | None = None,
                 ff_chunks: int = 1):
        super().__init__()
        self.attn, self.ff = attn, ff
        self.norm1, self.norm2 = norm1, norm2
        self.cross_attn, self.norm_cross = cross_attn, norm_cross
        self.prenorm = prenorm
        self.ff_chunks = ff_chunks
        """Run the feed-forward over this many pieces of the sequence (1 = all at once)."""
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def _residual(self, x, norm, fn):
        if self.prenorm:
            return x + self.drop(fn(norm(x)))
        return norm(x + self.drop(fn(x)))

    def _ff(self, h: torch.Tensor) -> torch.Tensor:
        return chunked(self.ff, h, self.ff_chunks)

    def _memory(self, attn_kw: dict) -> dict:
        """XL memory (B, M, C) is the residual stream: normalise it like the input."""
        memory = attn_kw.get("memory")
        if memory is not None and self.prenorm:
            attn_kw = dict(attn_kw, memory=self.norm1(memory))
        return attn_kw

    def attn_branch(self, x: torch.Tensor, **attn_kw) -> torch.Tensor:
        """F(x) = attention(norm1(x)) (pre-norm only): the first branch of a reversible layer."""
        return self.drop(self.attn(self.norm1(x), **self._memory(attn_kw)))

    def ff_branch(self, x: torch.Tensor) -> torch.Tensor:
        """G(x) = feed-forward(norm2(x)) (pre-norm only): the second branch of a reversible layer."""
        return self.drop(self._ff(self.norm2(x)))

    def forward(self, x: torch.Tensor, *, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None, cross_out: list | None = None,
                **attn_kw) -> torch.Tensor:
        # x: (B, T, C); attn_kw: positions, mask, bias, is_causal, cache, layer, attn_out,
        # memory (XL: (B, M, C) earlier inputs of this layer), relative
        attn_kw = self._memory(attn_kw)
        x = self._residual(x, self.norm1, lambda h: self.attn(h, **attn_kw))
        if self.cross_attn is not None:
            kw = {k: attn_kw.get(k) for k in ("cache", "layer")}
            x = self._residual(x, self.norm_cross, lambda h: self.cross_attn(
                h, context=context, mask=context_mask, attn_out=cross_out, **kw))
        return self._residual(x, self.norm2, self._ff)
