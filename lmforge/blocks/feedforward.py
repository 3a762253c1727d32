"""Position-wise feed-forward network: up-project, non-linearity, down-project.

``relu``/``gelu``/``gelu_tanh`` use two matrices (``up_proj``, ``down_proj``); the gated ones
use three (``gate_proj``, ``up_proj``, ``down_proj``): down(act(gate(x)) * up(x)), with
act = silu for ``swiglu`` (Llama), exact GELU for ``geglu``, tanh-approximate GELU for
``geglu_tanh`` (Gemma).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu", "swiglu", "geglu", "geglu_tanh")
GATED = ("swiglu", "geglu", "geglu_tanh")
"""Activations that gate the up-projection with a second one (three matrices)."""


def activation_fn(name: str):
    """The element-wise function called ``name`` (one of ACTIVATIONS; a gated one's is its
    gate's: swiglu -> silu, geglu -> gelu, geglu_tanh -> gelu_tanh)."""
    if name == "relu":
        return F.relu
    if name in ("gelu", "geglu"):
        return F.gelu
    if name in ("gelu_tanh", "geglu_tanh"):
        return lambda x: F.gelu(x, approximate="tanh")
    if name in ("silu", "swiglu"):
        return F.silu
    raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, activation: str = "gelu", bias: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        self.act = activation_fn(activation)
        self.gated = activation in GATED
        if self.gated:
            self.gate_proj = nn.Linear(d_model, d_ff, bias=bias)
        self.up_proj = nn.Linear(d_model, d_ff, bias=bias)
        self.down_proj = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        if self.gated:
            h = self.act(self.gate_proj(x)) * self.up_proj(x)  # (B, T, F)
        else:
            h = self.act(self.up_proj(x))  # (B, T, F)
        return self.down_proj(self.dropout(h))
