"""Positional information: added to embeddings (sinusoidal, learned), rotated into queries and
keys (RoPE), or added to attention scores (ALiBi)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

POSITIONAL = ("learned", "sinusoidal", "rope", "alibi", "relative", "t5_relative", "none")
ROPE_SCALING: dict[str, tuple[str, ...]] = {
    "linear": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
}
"""RoPE scaling types (Hugging Face's ``rope_type``) and the parameters each one takes."""


def sinusoidal_table(max_len: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """PE[p, 2i] = sin(p / base^(2i/dim)), PE[p, 2i+1] = cos(p / base^(2i/dim)).  # (L, C)"""
    pos = torch.arange(max_len, dtype=torch.float64)[:, None]  # (L, 1)
    div = base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (C/2,)
    table = torch.zeros(max_len, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos / div)
    table[:, 1::2] = torch.cos(pos / div[: dim // 2])
    return table.float()


class SinusoidalPositions(nn.Module):
    """Fixed sine/cosine position vectors ("Attention Is All You Need", section 3.5)."""

    PREBUILT = 4096
    """Positions computed up front; the table grows when a longer sequence comes, so a model
    declaring a context of 10^6 does not allocate gigabytes at load."""

    def __init__(self, max_len: int, dim: int):
        super().__init__()
        self.dim = dim
        self.register_buffer("table", sinusoidal_table(min(max_len, self.PREBUILT), dim),
                             persistent=False)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:  # (T,) or (B, T) -> (..., C)
        if positions.numel() and int(positions.max()) >= self.table.shape[0]:
            grown = sinusoidal_table(int(positions.max()) * 2, self.dim)
            self.table = grown.to(device=self.table.device, dtype=self.table.dtype)
        return self.table[positions]


class LearnedPositions(nn.Module):
    """One trained vector per position (GPT-2, BERT)."""

    def __init__(self, max_len: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_len, dim))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:  # (T,) or (B, T) -> (..., C)
        return nn.functional.embedding(positions, self.weight)


def rope_inv_freq(head_dim: int, theta: float = 10000.0,
                  scaling: Mapping[str, Any] | None = None) -> torch.Tensor:
    """Rotation frequency of each pair of dimensions: theta^(-2i/d), optionally rescaled for
    longer contexts (``scaling``: see :data:`ROPE_SCALING`).  # (D/2,)"""
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    if scaling is None:
        return inv
    kind = scaling.get("rope_type")
    if kind == "linear":  # position interpolation: every angle divided by the factor
        return inv / scaling["factor"]
    if kind == "llama3":
        return _llama3_inv_freq(inv, **{k: scaling[k] for k in ROPE_SCALING["llama3"]})
    raise ValueError(f"unknown rope_type {kind!r}; choose one of {', '.join(ROPE_SCALING)}")


def _llama3_inv_freq(inv: torch.Tensor, factor: float, low_freq_factor: float,
                     high_freq_factor: float, original_max_position_embeddings: int) -> torch.Tensor:
    """Llama 3.1: wavelengths shorter than original_len / high_freq_factor keep their frequency,
    those longer than original_len / low_freq_factor are divided by ``factor``, and those in
    between are interpolated smoothly. Same operations, in the same order, as ``transformers``'
    ``_compute_llama3_parameters``.  (D/2,) -> (D/2,)"""
    old_len = original_max_position_embeddings
    low_freq_wavelen = old_len / low_freq_factor
    high_freq_wavelen = old_len / high_freq_factor
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > low_freq_wavelen, inv / factor, inv)
    smooth = (old_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return torch.where(medium, smoothed, scaled)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (Su et al. 2021) in the "rotate half" layout used by GPT-NeoX
    and Llama in Hugging Face: dimension i is paired with dimension i + D/2."""

    PREBUILT = 4096
    """Positions whose angles are computed up front; the tables grow when a longer sequence
    comes, so a model declaring a context of 10^6 does not allocate gigabytes at load."""

    def __init__(self, head_dim: int, max_len: int, theta: float = 10000.0,
                 inv_freq: torch.Tensor | None = None):
        super().__init__()
        self.head_dim = head_dim
        inv = inv_freq if inv_freq is not None else rope_inv_freq(head_dim, theta)
        self.register_buffer("inv_freq", inv, persistent=False)
        self._inv32 = inv.detach().float().clone()  # stays float32 when the model is cast
        self._build(min(max_len, self.PREBUILT))

    def _build(self, length: int) -> None:
        pos = torch.arange(length, dtype=torch.float32, device=self.inv_freq.device)
        freqs = torch.outer(pos, self._inv32.to(self.inv_freq.device))  # (L, D/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (L, D)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)
        self._memo = None

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate ``x`` (B, H, T, D) by angles of ``positions`` (T,) or (B, T)."""
        cos, sin = self._angles(positions, x.dtype)
        return x * cos + rotate_half(x) * sin

    def _angles(self, positions: torch.Tensor, dtype: torch.dtype):
        """cos/sin for ``positions``; every layer of a forward pass gets the same positions
        tensor, so the lookup is done once per pass, not twice per layer."""
        memo = self._memo
        if memo is not None and memo[0] is positions and memo[1] == dtype:
            return memo[2], memo[3]
        if int(positions.max()) >= self.cos.shape[0]:
            self._build(int(positions.max()) * 2)
        cos = self.cos[positions].to(dtype)  # (T, D) or (B, T, D)
        sin = self.sin[positions].to(dtype)
        if cos.dim() == 3:  # per-sequence positions: broadcast over heads
            cos, sin = cos[:, None], sin[:, None]
        self._memo = (positions, dtype, cos, sin)
        return cos, sin


def alibi_slopes(n_head: int) -> torch.Tensor:
    """Head slopes of ALiBi (Press et al. 2021): a geometric sequence starting at 2^(-8/n);
    for a head count that is not a power of two, the extra heads take every other slope of
    the next power of two.  # (H,)"""

    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-8 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(n_head).is_integer():
        return torch.tensor(power_of_two(n_head))
    closest = 2 ** math.floor(math.log2(n_head))
    extra = power_of_two(2 * closest)[0::2][: n_head - closest]
    return torch.tensor(power_of_two(closest) + extra)


def alibi_bias(slopes: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
    """Additive score bias -slope * (q - k): zero on the diagonal, more negative with distance.
    q_pos (Tq,), k_pos (Tk,) -> (H, Tq, Tk). Future keys get a positive bias here; the causal
    mask removes them."""
    dist = (q_pos[:, None] - k_pos[None, :]).to(slopes.dtype)  # (Tq, Tk)
    return -slopes[:, None, None] * dist
