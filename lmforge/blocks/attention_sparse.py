"""Pattern-sparse attention backends: ``longformer`` (sliding window + global tokens), ``bigbird``
(window + global + random blocks), ``sparse_strided`` and ``sparse_fixed`` (Child et al. 2019),
and ``full`` (exact dense attention under another name). See docs/attention.md.

Each pattern is a predicate ``allowed(query position, key position)``: the backend computes the
exact softmax over the keys the pattern allows AND the prepared mask allows (padding, causal).
At full length and without weights or a bias, the banded/block patterns run *gathered*: the
queries in blocks of ``bs``, each block against only the keys its pattern can reach (window,
globals, random or summary blocks), so memory and compute grow like T x (keys per block), not
T x T; ``longformer`` without dilation runs its window blocked (:mod:`.attention_blocked`).
Global query rows (they see everything) are computed densely on their own. The backends are
registered ``own_mask``: they get only the padding mask and add the causal part pair by pair,
so a decoder never builds a (T, T) mask.
:func:`pattern_mask` draws a pattern as a (T, T) boolean matrix.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..config import FieldError
from .attention_backends import (
    explicit_attention,
    fused_attention,
    prepare_mask,
    register_attention,
)
from .attention_blocked import banded_attention, key_padding

__all__ = ["BigBirdSettings", "FixedSettings", "LongformerSettings", "StridedSettings",
           "pattern_mask"]


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


def _context(name: str, s, n_keys: int, causal: bool, device, seed: int = 0) -> dict:
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
        m = allowed(s, pos[:, None], pos[None, :], _context(name, s, T, causal, None, seed))
    elif name == "sliding_window":
        d = pos[:, None] - pos[None, :]
        m = (d >= 0) & (d < window) if window > 0 else d >= 0
    else:
        m = torch.ones(T, T, dtype=torch.bool)
    return m & (pos[:, None] >= pos[None, :]) if causal else m


# --- the computation ----------------------------------------------------------------------

def _exact(t: torch.Tensor) -> torch.dtype:
    return torch.promote_types(t.dtype, torch.float32)  # softmax at least in fp32


def _gather_mask(mask, idx, n_blocks: int, bs: int, T: int):
    """The prepared mask (broadcastable to (B, H, T, T)) at the gathered keys ``idx``: (nb, K)
    for each query block, or (nb, bs, K) for each query.  # (B|1, H|1, nb, bs|1, K)"""
    while mask.dim() < 4:
        mask = mask.unsqueeze(0)
    if idx.dim() == 2:
        idx = idx[:, None, :]  # (nb, 1, K)
    if mask.shape[-2] == 1:  # a key-padding mask, the same for every query
        return mask[:, :, 0][:, :, idx]  # (B, H, nb, 1|bs, K)
    mask = F.pad(mask, (0, 0, 0, n_blocks * bs - T), value=True)
    Bm, Hm = mask.shape[:2]
    rows = mask.reshape(Bm, Hm, n_blocks, bs, mask.shape[-1])  # (B, H, nb, bs, T)
    return rows.gather(-1, idx[None, None].expand(Bm, Hm, n_blocks, bs, -1))


def _gathered(q, k, v, mask, dropout_p, bs, idx, valid, allowed):
    """Exact attention where query block b (rows b*bs ..) sees only keys ``idx[b]`` (nb, K)
    (those with ``valid``), each (query, key) pair filtered by ``allowed`` and the mask."""
    B, H, T, D = q.shape
    nb = idx.shape[0]
    qb = F.pad(q, (0, 0, 0, nb * bs - T)).view(B, H, nb, bs, D)  # (B, H, nb, bs, D)
    safe = idx.clamp(0, T - 1)
    kg, vg = k[:, :, safe], v[:, :, safe]  # (B, H, nb, K, D)
    s = qb @ kg.transpose(-2, -1) / math.sqrt(D)  # (B, H, nb, bs, K)
    qpos = torch.arange(nb * bs, device=q.device).view(nb, bs, 1)
    ok = allowed(qpos, idx[:, None, :]) & valid[:, None, :]  # (nb, bs, K)
    if mask is not None:
        ok = ok & _gather_mask(mask, safe, nb, bs, T)  # (B|1, H|1, nb, bs, K)
    ok = ok | ~ok.any(-1, keepdim=True)  # padded query rows: never NaN
    s = s.masked_fill(~ok, float("-inf"))
    w = torch.softmax(s.to(_exact(s)), -1).to(q.dtype)
    if dropout_p > 0:
        w = F.dropout(w, dropout_p)
    out = (w @ vg).view(B, H, nb * bs, D)  # (B, H, nb*bs, D)
    return out[:, :, :T]


def _global_rows(out, q, k, v, mask, dropout_p, rows, causal: bool):
    """Replace the output rows ``rows`` (global queries: they see every key the mask allows,
    in a decoder every earlier key) by dense attention."""
    if rows.numel() == 0:
        return out
    m = None
    if mask is not None:
        m = mask if mask.shape[-2] == 1 else mask[..., rows, :]
    if causal:
        past = torch.arange(k.shape[-2], device=q.device)[None, :] <= rows[:, None]  # (G, T)
        m = past if m is None else m & past
    if m is not None:
        m = m | ~m.any(-1, keepdim=True)  # a padding row: never NaN
    y, _ = explicit_attention(q[:, :, rows], k, v, mask=m, bias=None, dropout_p=dropout_p,
                              need_weights=False, options=None)
    out = out.clone()
    out[:, :, rows] = y
    return out


def _plan(name: str, s, T: int, ctx: dict, device):
    """(block size, key indices (nb, K), valid (nb, K), global query rows) of the gathered
    computation, or None where it would not save anything."""
    if name == "longformer":
        bs, reach = max(16, s.local_window), s.local_window * s.dilation
        nb = -(-T // bs)
        start = torch.arange(nb, device=device)[:, None] * bs - reach
        win = start + torch.arange(bs + 2 * reach, device=device)  # (nb, bs + 2 reach)
        g = ctx["globals"][ctx["globals"] < T]
        gk = g[None, :].expand(nb, -1)
        idx = torch.cat([win, gk], 1)
        valid = torch.cat([(win >= 0) & (win < T), (gk < start) | (gk >= start + win.shape[1])],
                          1)
        return bs, idx, valid, g
    if name == "bigbird":
        bs, nb = s.block_size, -(-T // s.block_size)
        half, gw = s.window_blocks // 2, min(s.global_blocks, nb)
        qb = torch.arange(nb, device=device)[:, None]
        win = qb + torch.arange(-half, half + 1, device=device)[None, :]  # (nb, 2 half + 1)
        glob = torch.arange(gw, device=device).expand(nb, -1)  # (nb, gw)
        rnd = _random_indices(ctx["random"])  # (nb, r)
        blocks = torch.cat([win, glob, rnd], 1)  # (nb, nK)
        bvalid = torch.cat([(win >= 0) & (win < nb), (glob - qb).abs() > half,
                            ctx["random"].gather(1, rnd)], 1)
        idx = (blocks[..., None] * bs + torch.arange(bs, device=device)).flatten(1)
        valid = (bvalid[..., None] & (idx.view(nb, -1, bs) < T)).flatten(1)
        return bs, idx, valid, torch.arange(min(s.global_blocks * bs, T), device=device)
    if name == "sparse_fixed":
        bs, nb = s.block_size, -(-T // s.block_size)
        own = torch.arange(nb, device=device)[:, None] * bs + torch.arange(bs, device=device)
        summ = torch.arange(T, device=device)
        summ = summ[summ % bs >= bs - s.summary][None, :].expand(nb, -1)
        idx = torch.cat([own, summ], 1)
        valid = torch.cat([own < T, summ // bs != torch.arange(nb, device=device)[:, None]], 1)
        return bs, idx, valid, torch.zeros(0, dtype=torch.long, device=device)
    return None


def _longformer_banded(q, k, v, mask, dropout_p, s: LongformerSettings, ctx, causal: bool):
    """``longformer`` without dilation and with at most a key-padding ``mask``: the window
    computed blocked (:func:`banded_attention`, the global tokens as extra keys of every query)
    and the global queries' rows densely."""
    T = k.shape[-2]
    g = ctx["globals"][ctx["globals"] < T]
    w = s.local_window
    before, after = (w - 1, 0) if causal else (w, w)
    out = banded_attention(q, k, v, before=before, after=after, padding=key_padding(mask)[1],
                           dropout_p=dropout_p, extra=g, causal=causal)
    return _global_rows(out, q, k, v, mask, dropout_p, g, causal)


def _random_indices(rand: torch.Tensor) -> torch.Tensor:
    """(nb, most per row) key-block indices of the True entries of each row of ``rand`` (a row
    with fewer is padded with False entries, which the caller marks invalid)."""
    nb = rand.shape[0]
    width = int(rand.sum(-1).max()) if nb else 0  # the most random blocks of one row
    return torch.argsort(rand.float(), dim=-1, descending=True, stable=True)[:, :width]


def _strided(q, k, v, mask, dropout_p, s: StridedSettings, causal: bool):
    """``sparse_strided`` in O(T (3l + T/l)): the local band gathered per block of l queries,
    the strided keys (same residue mod l, other blocks) by regrouping positions by residue;
    one softmax over both (they share only the query itself, kept in the band)."""
    B, H, T, D = q.shape
    l = s.stride
    nb = -(-T // l)
    dev = q.device
    band = torch.arange(nb, device=dev)[:, None] * l - (l - 1) + torch.arange(3 * l - 2,
                                                                             device=dev)
    safe = band.clamp(0, T - 1)  # (nb, 3l - 2)
    qb = F.pad(q, (0, 0, 0, nb * l - T)).view(B, H, nb, l, D)  # (B, H, nb, l, D)
    s1 = qb @ k[:, :, safe].transpose(-2, -1) / math.sqrt(D)  # (B, H, nb, l, 3l - 2)
    qpos = torch.arange(nb * l, device=dev).view(nb, l, 1)
    d = qpos - band[:, None, :]
    ok1 = ((d >= 0) if causal else (d > -l)) & (d < l) & (band >= 0)[:, None] & (band < T)[:, None]
    # strided: query (block m, residue r) and key (block m2, residue r), m2 != m
    m2 = torch.arange(nb, device=dev)
    kidx = m2[None, None, :] * l + torch.arange(l, device=dev)[None, :, None]  # (1, l, nb)
    kidx = kidx.expand(nb, l, nb)  # (nb, l, nb): [m, r, m2] -> key m2*l + r
    ok2 = (m2[None, None, :] != torch.arange(nb, device=dev)[:, None, None]) & (kidx < T)
    if causal:
        ok2 = ok2 & (m2[None, None, :] < torch.arange(nb, device=dev)[:, None, None])
    kidx = kidx.clamp(max=T - 1)
    if mask is not None:
        ok1 = ok1 & _gather_mask(mask, safe, nb, l, T)
        ok2 = ok2 & _gather_mask(mask, kidx, nb, l, T)
    def by_residue(t):  # (B, H, T, D) -> (B, H, l, nb, D): positions grouped by residue
        return F.pad(t, (0, 0, 0, nb * l - T)).view(B, H, nb, l, D).transpose(2, 3).contiguous()
    kr, vr = by_residue(k), by_residue(v)
    s2 = (by_residue(q) @ kr.transpose(-2, -1)).transpose(2, 3) / math.sqrt(D)  # [m, r, m2]
    scores = torch.cat([s1.masked_fill(~ok1, float("-inf")),
                        s2.masked_fill(~ok2, float("-inf"))], -1)  # (B, H, nb, l, 3l-2+nb)
    empty = torch.isinf(scores).all(-1, keepdim=True)  # padded query rows
    w = torch.softmax(scores.masked_fill(empty, 0.0).to(_exact(scores)), -1).to(q.dtype)
    if dropout_p > 0:
        w = F.dropout(w, dropout_p)
    w1, w2 = w.split([s1.shape[-1], nb], -1)
    out = w1 @ v[:, :, safe] + (w2.transpose(2, 3).contiguous() @ vr).transpose(2, 3)
    # (B, H, nb, l, D)
    return out.reshape(B, H, nb * l, D)[:, :, :T]


class BigBirdState(nn.Module):
    """A layer's random-block seed, drawn from torch's generator when the model is built and
    saved with it, so the random blocks are fixed per layer and reproducible."""

    def __init__(self):
        super().__init__()
        self.register_buffer("seed", torch.randint(0, 2**31 - 1, ()))


def _bigbird_state(settings, n_head, head_dim, context_length):
    return BigBirdState()


def _sparse(name: str):
    """The backend function of pattern ``name``."""
    cls, allowed = PATTERNS[name]

    def backend(q, k, v, *, mask, bias, dropout_p, need_weights, options):
        s = options.settings if options.settings is not None else cls()
        Tq, Tk = q.shape[-2], k.shape[-2]
        seed = int(options.state.seed) if name == "bigbird" and options.state is not None else 0
        ctx = _context(name, s, Tk, options.causal, q.device, seed)

        def pred(qp, kp):  # the pattern, and the causal part (``mask`` is the padding only)
            ok = allowed(s, qp, kp, ctx)
            return ok & (kp <= qp) if options.causal else ok
        if need_weights or bias is not None or Tq != Tk or options.query_offset(Tq, Tk) \
                or options.window > 0:
            # dense: the pattern as a mask (weights, ALiBi, KV-cache decoding, a window)
            qp = torch.arange(Tq, device=q.device)[:, None] + options.query_offset(Tq, Tk)
            full = pred(qp, torch.arange(Tk, device=q.device)[None, :])  # (Tq, Tk)
            mask = prepare_mask(Tq, Tk, mask, options.causal, options, q.device)
            full = full if mask is None else mask & full
            return explicit_attention(q, k, v, mask=full | ~full.any(-1, keepdim=True),
                                      bias=bias, dropout_p=dropout_p, need_weights=True,
                                      options=options)
        if name == "longformer" and s.dilation == 1 and key_padding(mask)[0]:
            return _longformer_banded(q, k, v, mask, dropout_p, s, ctx, options.causal), None
        if name == "sparse_strided":
            return _strided(q, k, v, mask, dropout_p, s, options.causal), None
        bs, idx, valid, rows = _plan(name, s, Tk, ctx, q.device)
        out = _gathered(q, k, v, mask, dropout_p, bs, idx, valid, pred)
        return _global_rows(out, q, k, v, mask, dropout_p, rows, options.causal), None
    backend.__name__ = f"{name}_attention"
    backend.__doc__ = f"Exact attention restricted to the ``{name}`` pattern (module docstring)."
    return backend


for _name, (_cls, _) in PATTERNS.items():
    register_attention(_name, returns_weights=True, settings=_cls, own_mask=True,
                       make_state=_bigbird_state if _name == "bigbird" else None)(_sparse(_name))


@register_attention("full", returns_weights=True)
def full_attention(q, k, v, *, mask, bias, dropout_p, need_weights, options):
    """Exact dense attention (an alias of ``fused``; ``explicit`` when the weights are asked)."""
    if need_weights:
        return explicit_attention(q, k, v, mask=mask, bias=bias, dropout_p=dropout_p,
                                  need_weights=True, options=options)
    return fused_attention(q, k, v, mask=mask, bias=bias, dropout_p=dropout_p,
                           need_weights=False, options=options)
