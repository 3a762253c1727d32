"""Reversible residual layers (RevNet, Gomez et al. 2017; used by Reformer, Kitaev et al. 2020).

The residual stream is doubled, (x1, x2) = (x, x), and each layer is the coupling

    y1 = x1 + F(x2)        F = attention(norm1(·))
    y2 = x2 + G(y1)        G = feed-forward(norm2(·))

which can be run backwards: x2 = y2 - G(y1), x1 = y1 - F(x2). So the backward pass does not
need the activations of the forward pass: :class:`ReversibleStack` keeps only the output of the
last layer and, going back layer by layer, recomputes each layer's input from its output and
the layer's activations from that input (one layer's worth of activations alive at a time).
The stack's output is the mean of the two streams, (y1 + y2) / 2.

The recomputation must reproduce the forward exactly, so reversible layers need pre-norm and
no dropout (``ModelConfig`` refuses the rest).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch


def couple(block, x1: torch.Tensor, x2: torch.Tensor, kw: dict):
    """One reversible layer: (x1, x2) -> (x1 + F(x2), x2 + G(y1))."""
    y1 = x1 + block.attn_branch(x2, **kw)
    return y1, x2 + block.ff_branch(y1)


def _replay_kw(kw: dict) -> dict:
    """A layer's keyword arguments for recomputation: no side effects a second time (weights
    collected, KV-cache writes)."""
    return {k: (None if k in ("attn_out", "cache") else v) for k, v in kw.items()}


class ReversibleStack(torch.autograd.Function):
    """autograd for a stack of reversible layers that stores only the last layer's output.

    ``apply(x1, x2, blocks, kws)`` -> (y1, y2); ``kws[i]`` are layer i's attention keywords.
    The parameters' gradients are accumulated into their ``.grad`` during the backward pass
    (by a nested ``torch.autograd.backward`` per branch), as ``loss.backward()`` does."""

    @staticmethod
    def forward(ctx, x1, x2, blocks, kws):  # runs without building a graph
        for block, kw in zip(blocks, kws):
            x1, x2 = couple(block, x1, x2, kw)
        ctx.blocks, ctx.kws = blocks, [_replay_kw(kw) for kw in kws]
        ctx.autocast = _autocast_state(x1)
        ctx.save_for_backward(x1, x2)
        return x1, x2

    @staticmethod
    def backward(ctx, dy1, dy2):
        y1, y2 = ctx.saved_tensors
        for block, kw in zip(reversed(ctx.blocks), reversed(ctx.kws)):
            with torch.enable_grad(), _autocast(ctx.autocast):
                y1 = y1.detach().requires_grad_(True)
                g = block.ff_branch(y1)
                torch.autograd.backward(g, dy2)  # G's parameters; dG/dy1 into y1.grad
            with torch.no_grad():
                x2 = y2 - g
                dy1 = dy1 + y1.grad  # dL/dy1 in total: direct + through y2 = x2 + G(y1)
            with torch.enable_grad(), _autocast(ctx.autocast):
                x2 = x2.detach().requires_grad_(True)
                f = block.attn_branch(x2, **kw)
                torch.autograd.backward(f, dy1)  # F's parameters; dF/dx2 into x2.grad
            with torch.no_grad():
                x1 = y1 - f
                dy2 = dy2 + x2.grad  # dL/dx2 = dL/dy2 + dF/dx2ᵀ dL/dy1
            y1, y2 = x1.detach(), x2.detach()
        return dy1, dy2, None, None


def _autocast_state(x: torch.Tensor):
    kind = x.device.type
    if torch.is_autocast_enabled(kind):
        return kind, torch.get_autocast_dtype(kind)
    return None


def _autocast(state):
    return contextlib.nullcontext() if state is None else torch.autocast(state[0], dtype=state[1])


def reversible_forward(blocks: Sequence, x: torch.Tensor, kws: Sequence[dict]) -> torch.Tensor:
    """Run ``blocks`` as reversible layers on x (B, T, C) or packed (N, C); returns the mean of
    the two output streams, same shape. With gradients, through :class:`ReversibleStack`
    (activations recomputed in the backward); without, the plain coupling."""
    if torch.is_grad_enabled() and (x.requires_grad or any(
            p.requires_grad for b in blocks for p in b.parameters())):
        if not x.requires_grad:  # the Function's backward must run for the parameters' sake
            x = x.detach().requires_grad_(True)
        y1, y2 = ReversibleStack.apply(x, x, list(blocks), list(kws))
    else:
        y1, y2 = x, x
        for block, kw in zip(blocks, kws):
            y1, y2 = couple(block, y1, y2, kw)
    return (y1 + y2) / 2
