"""Pattern-sparse attention backends: ``longformer`` (sliding window + global tokens), ``bigbird``
(window + global + random blocks), ``sparse_strided`` and ``sparse_fixed`` (Child et al. 2019),
and ``full`` (exact dense attention under another name). See docs/attention.md.

Each pattern (:mod:`.sparse_patterns`: settings and a predicate ``allowed(query position, key
position)``) is computed as the exact softmax over the keys the pattern allows AND the
prepared mask allows (padding, causal). At full length and without weights or a bias, the
queries run in blocks, each block against only the keys its pattern can reach, so memory and
compute grow like T x (keys per block), not T x T: ``longformer`` (without dilation) and
``bigbird`` take their window as a strided view of K and V (:mod:`.attention_blocked`, no
copy), with the global tokens, or BigBird's global and random blocks, as extra keys;
``sparse_strided`` its band the same way and its strided keys regrouped by residue;
``sparse_fixed`` (and longformer with dilation, bigbird under a per-query mask) *gathers* each
block's keys. Global query rows (they see everything) are computed densely on their own. The backends are
registered ``own_mask``: they get only the padding mask and add the causal part pair by pair,
so a decoder never builds a (T, T) mask.
:func:`pattern_mask` draws a pattern as a (T, T) boolean matrix.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .attention_backends import (
    ATTENTION_BACKENDS,
    call_backend,
    explicit_attention,
    fused_attention,
    prepare_mask,
    register_attention,
)
from .attention_blocked import banded_attention, key_padding, key_windows
from .sparse_patterns import (
    PATTERNS,
    BigBirdSettings,
    FixedSettings,
    LongformerSettings,
    StridedSettings,
    pattern_context,
    pattern_mask,
    random_indices,
)

__all__ = ["BigBirdSettings", "FixedSettings", "LongformerSettings", "StridedSettings",
           "pattern_mask"]


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


def _bigbird_keys(s: BigBirdSettings, ctx, T: int, device, window: bool):
    """(key positions (nb, K), valid (nb, K)) each query block reaches: its window of
    neighbouring blocks (with ``window``), the global blocks outside that window and its random
    blocks, ``block_size`` positions each; positions past T are invalid."""
    bs, nb, half = s.block_size, -(-T // s.block_size), s.window_blocks // 2
    qb = torch.arange(nb, device=device)[:, None]
    win = qb + torch.arange(-half, half + 1, device=device)[None, :]  # (nb, 2 half + 1)
    glob = torch.arange(min(s.global_blocks, nb), device=device).expand(nb, -1)  # (nb, g)
    rnd = random_indices(ctx["random"])  # (nb, r)
    blocks = [glob, rnd]
    bvalid = [(glob - qb).abs() > half, ctx["random"].gather(1, rnd)]
    if window:
        blocks, bvalid = [win, *blocks], [(win >= 0) & (win < nb), *bvalid]
    idx = (torch.cat(blocks, 1)[..., None] * bs + torch.arange(bs, device=device)).flatten(1)
    valid = (torch.cat(bvalid, 1)[..., None] & (idx.view(nb, -1, bs) < T)).flatten(1)
    return idx, valid


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
        idx, valid = _bigbird_keys(s, ctx, T, device, window=True)
        return s.block_size, idx, valid, torch.arange(min(s.global_blocks * s.block_size, T),
                                                      device=device)
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


def _bigbird_banded(q, k, v, mask, dropout_p, s: BigBirdSettings, ctx, causal: bool):
    """``bigbird`` with at most a key-padding ``mask``: each query block's window of
    neighbouring blocks blocked (:func:`banded_attention`, ``aligned``), its global blocks
    outside the window and its random blocks as per-block extra keys, the global queries'
    rows densely."""
    T, dev = k.shape[-2], q.device
    bs, half = s.block_size, s.window_blocks // 2
    idx, valid = _bigbird_keys(s, ctx, T, dev, window=False)  # (nb, (g + r) bs)
    out = banded_attention(q, k, v, before=half * bs, after=0 if causal else half * bs,
                           padding=key_padding(mask)[1], dropout_p=dropout_p, block=bs,
                           extra=idx, extra_valid=valid, causal=causal, aligned=True)
    rows = torch.arange(min(s.global_blocks * bs, T), device=dev)
    return _global_rows(out, q, k, v, mask, dropout_p, rows, causal)


def _strided(q, k, v, mask, dropout_p, s: StridedSettings, causal: bool):
    """``sparse_strided`` in O(T (3l + T/l)): the local band per block of l queries (a view),
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
    s1 = qb @ key_windows(k, l - 1, l - 1, l, nb) / math.sqrt(D)  # (B, H, nb, l, 3l - 2)
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
    out = w1 @ key_windows(v, l - 1, l - 1, l, nb).transpose(-2, -1) \
        + (w2.transpose(2, 3).contiguous() @ vr).transpose(2, 3)
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
        ctx = pattern_context(name, s, Tk, options.causal, q.device, seed)

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
        if name == "bigbird" and key_padding(mask)[0]:
            return _bigbird_banded(q, k, v, mask, dropout_p, s, ctx, options.causal), None
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


@register_attention("full", returns_weights=True, native_gqa=True, native_causal=True)
def full_attention(q, k, v, *, mask, bias, dropout_p, need_weights, options):
    """Exact dense attention (an alias of ``fused``, registered like it: a plain causal call
    reaches torch's kernel without a (T, T) mask; ``explicit`` when the weights are asked)."""
    if need_weights:
        return call_backend(ATTENTION_BACKENDS["explicit"], q, k, v, mask=mask, bias=bias,
                            dropout_p=dropout_p, need_weights=True, options=options)
    return fused_attention(q, k, v, mask=mask, bias=bias, dropout_p=dropout_p,
                           need_weights=False, options=options)
