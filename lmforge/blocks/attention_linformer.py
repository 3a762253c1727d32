"""Linformer attention (Wang et al. 2020): ``attention = "linformer"``, encoders only.

Keys and values are projected along the sequence to ``projected_length`` rows by learned
matrices E and F (k x context_length, one pair per layer shared by its heads; ``share_kv``
uses E for both): softmax(Q (E K)ᵀ / sqrt(d)) (F V). The cost is linear in the length (T x k
scores instead of T x T). A sequence shorter than the context uses the first T columns of E
and F. Padded keys and values are zeroed before the projection, so padding content never
reaches the output (the projected rows still mix real positions by their learned weights).

There is no causal form: every projected row mixes all positions, later ones included, and
masking cannot undo that, so the backend is registered with ``causal=False`` and a decoder
(``arch = "decoder"``) using it is refused when its config is made.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import FieldError
from .attention_backends import register_attention
from .attention_lsh import plain_inputs

__all__ = ["LinformerSettings", "LinformerState", "linformer_attention"]


@dataclass(frozen=True)
class LinformerSettings:
    """``[model.attention_options]`` of ``attention = "linformer"``."""

    projected_length: int = 128
    """k: rows the keys and values are projected to (the paper: 128-256 at lengths 512-4096);
    cost and memory grow with T x k."""
    share_kv: bool = False
    """One projection for keys and values (E = F): half the parameters."""

    def __post_init__(self):
        k = self.projected_length
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise FieldError(self, "projected_length", f"must be a positive integer, got {k!r}")


class LinformerState(nn.Module):
    """The layer's learned projections along the sequence: ``proj_k`` (k, context_length) and
    ``proj_v`` (the same shape, absent with ``share_kv``). Initialised U(-1/sqrt(k), 1/sqrt(k))
    as in the reference code; a model's own initialisation (``init_weights``) redraws every
    matrix N(0, std), these included."""

    def __init__(self, settings: LinformerSettings, context_length: int):
        super().__init__()
        k, bound = settings.projected_length, 1 / math.sqrt(settings.projected_length)
        self.proj_k = nn.Parameter(torch.empty(k, context_length).uniform_(-bound, bound))
        self.proj_v = None if settings.share_kv else nn.Parameter(
            torch.empty(k, context_length).uniform_(-bound, bound))


def make_linformer_state(settings, n_head: int, head_dim: int,
                         context_length: int) -> LinformerState:
    if context_length < 1:
        raise ValueError("attention 'linformer' needs the layer's context_length (its "
                         "projections cover that many positions)")
    return LinformerState(settings or LinformerSettings(), context_length)


@register_attention("linformer", causal=False, settings=LinformerSettings,
                    make_state=make_linformer_state)
def linformer_attention(q, k, v, *, mask, bias, dropout_p, need_weights, options):
    """softmax(Q (E K)ᵀ / sqrt(d)) (F V) (module docstring); non-causal only."""
    real = plain_inputs("linformer", mask, bias, options)  # (B, Tk) or None
    state = options.state
    if state is None:
        raise ValueError("attention 'linformer' needs its per-layer state (build the layer "
                         "with MultiHeadAttention, or pass options.state)")
    if options.causal:
        raise ValueError("attention 'linformer' has no causal form; use it in encoders")
    Tk, n = k.shape[2], state.proj_k.shape[1]
    if Tk > n:
        raise ValueError(f"attention 'linformer': {Tk} keys, but its projections cover "
                         f"context_length = {n} positions")
    E = state.proj_k[:, :Tk].to(k.dtype)  # (kp, Tk)
    Fm = E if state.proj_v is None else state.proj_v[:, :Tk].to(v.dtype)
    if real is not None:
        keep = real[:, None, :, None].to(k.dtype)  # (B, 1, Tk, 1)
        k, v = k * keep, v * keep
    kp, vp = E @ k, Fm @ v  # (B, H, kp, D)
    scores = q @ kp.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, Tq, kp)
    w = torch.softmax(scores.float(), -1).to(q.dtype)
    if dropout_p > 0:
        w = F.dropout(w, dropout_p)
    return w @ vp, None  # (B, H, Tq, D)
