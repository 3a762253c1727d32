"""The patterns of the pattern-sparse attention backends (:mod:`.attention_sparse`): each
backend's settings (``[model.attention_options]``) and its predicate ``allowed(query position,
key position)``, BigBird's seeded random blocks, and :func:`pattern_mask`, which draws a
pattern as a (T, T) boolean matrix for pictures and tests. See docs/attention.md.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

from ..config import FieldError

__all__ = ["PATTERNS", "BigBirdSettings", "FixedSettings", "LongformerSettings",
           "StridedSettings", "pattern_mask", "pattern_context", "random_indices"]


def _positive(owner, name: str, value: int) -> None:
    if value < 1:
        raise FieldError(owner, name, f"must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class LongformerSettings:
    """``[model.attention_options]`` of ``attention = "longformer"``."""

    local_window: int = 64
    """Each query sees the keys within ``local_window`` positions on each side (encoders: 2w+1
    keys), or the last ``local_window`` positions, itself included (decoders)."""
    global_tokens: list[int] = field(default_factory=lambda: [0])
    """Positions of the global tokens: they attend to every position and every position attends
    to them (in a decoder a global token still sees only the past). Default [0] ([CLS])."""
    dilation: int = 1
    """Window dilation: only every ``dilation``-th position inside a window ``dilation`` times
    as wide (same number of keys, wider reach)."""

    def __post_init__(self):
        _positive(self, "local_window", self.local_window)
        _positive(self, "dilation", self.dilation)
        if any(not isinstance(g, int) or g < 0 for g in self.global_tokens):
            raise FieldError(self, "global_tokens", "must be a list of positions >= 0, got "
                             f"{self.global_tokens!r}")


@dataclass(frozen=True)
class BigBirdSettings:
    """``[model.attention_options]`` of ``attention = "bigbird"`` (ITC: internal global)."""

    block_size: int = 64
    """Tokens per block; attention is decided block by block."""
    window_blocks: int = 3
    """Neighbouring key blocks each query block sees (odd: itself and (n-1)/2 each side)."""
    global_blocks: int = 1
    """The first ``global_blocks`` blocks are global: they see everything, everyone sees them."""
    random_blocks: int = 2
    """Random earlier key blocks each query block draws (an encoder also sees the blocks that
    drew it), fixed per layer by a seed saved with the model."""

    def __post_init__(self):
        _positive(self, "block_size", self.block_size)
        _positive(self, "window_blocks", self.window_blocks)
        if self.window_blocks % 2 == 0:
            raise FieldError(self, "window_blocks", f"must be odd, got {self.window_blocks}")
        for name in ("global_blocks", "random_blocks"):
            if getattr(self, name) < 0:
                raise FieldError(self, name, f"must be >= 0, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class StridedSettings:
    """``[model.attention_options]`` of ``attention = "sparse_strided"``."""

    stride: int = 64
    """l: each query sees the previous l positions (both sides in an encoder) and every l-th
    position before it (and after it, in an encoder); about sqrt(T) is the paper's choice."""

    def __post_init__(self):
        _positive(self, "stride", self.stride)


@dataclass(frozen=True)
class FixedSettings:
    """``[model.attention_options]`` of ``attention = "sparse_fixed"``."""

    block_size: int = 64
    """l: each query sees its own block of l positions."""
    summary: int = 8
    """c: the last c positions of every block are summary cells every query sees."""

    def __post_init__(self):
        _positive(self, "block_size", self.block_size)
        _positive(self, "summary", self.summary)
        if self.summary > self.block_size:
            raise FieldError(self, "summary", f"must be <= block_size ({self.block_size}), "
                             f"got {self.summary}")


# --- the patterns: allowed(query positions, key positions) -> bool, broadcasting -------------

def _longformer_allowed(s: LongformerSettings, qp, kp, ctx):
    d = qp - kp
    if ctx["causal"]:
        local = (d >= 0) & (d < s.local_window * s.dilation)
    else:
        local = d.abs() <= s.local_window * s.dilation
    local = local & (d % s.dilation == 0)
    g = ctx["globals"]
    return local | torch.isin(qp, g) | torch.isin(kp, g)


def _bigbird_allowed(s: BigBirdSettings, qp, kp, ctx):
    qb, kb = qp // s.block_size, kp // s.block_size
    rand = ctx["random"]  # (nb, nb) bool
    n = rand.shape[0] - 1
    hit = rand[qb.clamp(0, n), kb.clamp(0, n)]
    return ((qb - kb).abs() <= s.window_blocks // 2) | (qb < s.global_blocks) \
        | (kb < s.global_blocks) | hit


def _strided_allowed(s: StridedSettings, qp, kp, ctx):
    d = qp - kp
    local = (d >= 0) & (d < s.stride) if ctx["causal"] else d.abs() < s.stride
    return local | (d % s.stride == 0)


def _fixed_allowed(s: FixedSettings, qp, kp, ctx):
    same = qp // s.block_size == kp // s.block_size
    return same | (kp % s.block_size >= s.block_size - s.summary)


PATTERNS = {"longformer": (LongformerSettings, _longformer_allowed),
            "bigbird": (BigBirdSettings, _bigbird_allowed),
            "sparse_strided": (StridedSettings, _strided_allowed),
            "sparse_fixed": (FixedSettings, _fixed_allowed)}
"""Backend name -> (settings dataclass, pattern predicate)."""


def _random_blocks(s: BigBirdSettings, n_blocks: int, causal: bool, seed: int) -> torch.Tensor:
    """(nb, nb) bool: the random key blocks of each query block. Block i draws
    ``random_blocks`` of the earlier blocks outside its window and the globals, with a
    generator seeded by (``seed``, i), so a longer (padded) sequence never changes the blocks
    of the real ones; in an encoder the relation is symmetric (j also sees the i that drew it).
    """
    return _random_table(s.block_size, s.window_blocks // 2, s.global_blocks, s.random_blocks,
                         n_blocks, causal, int(seed)).clone()


@functools.lru_cache(maxsize=64)
def _random_table(bs, half, n_global, r, n_blocks, causal, seed) -> torch.Tensor:
    out = torch.zeros(n_blocks, n_blocks, dtype=torch.bool)
    for i in range(max(n_global, 0), n_blocks):
        pool = torch.arange(n_global, max(n_global, i - half))  # earlier, outside the window
        if r > 0 and len(pool):
            g = torch.Generator().manual_seed(seed * 1_000_003 + i)
            out[i, pool[torch.randperm(len(pool), generator=g)[:r]]] = True
    return out if causal else out | out.T


def pattern_context(name: str, s, n_keys: int, causal: bool, device, seed: int = 0) -> dict:
    """What a predicate needs besides the settings, for a sequence of ``n_keys`` positions."""
    ctx: dict = {"causal": causal}
    if name == "longformer":
        ctx["globals"] = torch.tensor(sorted(set(s.global_tokens)), dtype=torch.long,
                                      device=device)
    if name == "bigbird":
        nb = -(-n_keys // s.block_size)
        ctx["random"] = _random_blocks(s, nb, causal, seed).to(device)
    return ctx


def pattern_mask(name: str, settings=None, T: int = 64, causal: bool = False,
                 window: int = 0, seed: int = 0) -> torch.Tensor:
    """The (T, T) bool pattern of backend ``name`` (True = query i may attend to key j), for
    pictures and tests: ``settings`` is its settings instance (or None: the defaults), causal
    ANDs the lower triangle; ``full`` and the dense backends are all True, ``sliding_window``
    uses ``window``; ``seed`` is bigbird's random-block seed."""
    pos = torch.arange(T)
    if name in PATTERNS:
        cls, allowed = PATTERNS[name]
        s = settings if settings is not None else cls()
        m = allowed(s, pos[:, None], pos[None, :], pattern_context(name, s, T, causal, None, seed))
    elif name == "sliding_window":  # causal: the last ``window``; else |i - j| < window
        d = pos[:, None] - pos[None, :]
        m = (d.abs() < window) if window > 0 else torch.ones(T, T, dtype=torch.bool)
    else:
        m = torch.ones(T, T, dtype=torch.bool)
    return m & (pos[:, None] >= pos[None, :]) if causal else m


def random_indices(rand: torch.Tensor) -> torch.Tensor:
    """(nb, most per row) key-block indices of the True entries of each row of ``rand`` (a row
    with fewer is padded with False entries, which the caller marks invalid)."""
    nb = rand.shape[0]
    width = int(rand.sum(-1).max()) if nb else 0  # the most random blocks of one row
    return torch.argsort(rand.float(), dim=-1, descending=True, stable=True)[:, :width]
