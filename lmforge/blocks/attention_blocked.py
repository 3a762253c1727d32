"""Blocked (banded) attention: exact softmax attention where query i sees only the keys
i - before .. i + after, in O(T x (block + before + after)) time and memory instead of O(T²).

The queries are cut into blocks of ``block`` positions; block n sees the keys
n*block - before .. n*block + block - 1 + after, a window of W = block + before + after keys
taken from K and V by ``unfold`` (a strided view of the padded tensors, no (T, T) anything):

    q   (B, H, T, D)  -> (B, H, nb, block, D)
    k,v (B, H, T, D)  -> (B, H, nb, W, D)        window of block n
    scores            =  (B, H, nb, block, W)     + a (block, W) band mask and key padding

Used by ``sliding_window`` (before = window - 1, after = 0) when the sequence is long enough
for it to pay (:func:`blocked_pays`), by ``longformer`` without dilation (before = after =
w, or w - 1 and 0 in a decoder; the global tokens as ``extra`` keys of every query), by
``bigbird`` (``aligned``: each query block sees its whole window of neighbouring blocks; the
global and random blocks as per-block ``extra`` keys) and by ``sparse_strided``'s local band
(:func:`key_windows`); the dense masked paths stay the reference. See docs/attention.md.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["MIN_BLOCKS", "banded_attention", "blocked_pays", "key_padding", "key_windows"]

MIN_BLOCKS = 4
"""The blocked path is used from ``MIN_BLOCKS`` windows of length on (T >= 4 w): below that
the dense kernel over a (T, T) mask costs about as much and is one fused call."""


def blocked_pays(length: int, reach: int) -> bool:
    """Whether a band of ``reach`` keys per query is worth computing blocked at ``length``."""
    return reach > 0 and length >= MIN_BLOCKS * reach


def key_padding(mask: torch.Tensor | None) -> tuple[bool, torch.Tensor | None]:
    """(usable, padding): a prepared mask that is None or a key-padding mask (one row for
    every query: (B|1, 1|H, 1, Tk) or shorter) gives (True, (B|1, H|1, Tk) bool or None);
    any per-query mask gives (False, None)."""
    if mask is None:
        return True, None
    if mask.dim() >= 2 and mask.shape[-2] != 1:
        return False, None
    while mask.dim() < 4:
        mask = mask.unsqueeze(0)
    return True, mask[:, :, 0, :]  # (B|1, H|1, Tk)


def key_windows(t: torch.Tensor, before: int, after: int, block: int, nb: int) -> torch.Tensor:
    """(..., T, D) -> (..., nb, D, W): the keys of each query block (positions n*block -
    before .. n*block + block - 1 + after, zeros outside 0..T-1), a view of the padded t."""
    T = t.shape[-2]
    padded = F.pad(t, (0, 0, before, nb * block - T + after))  # (..., before + nb*block + after, D)
    return padded.unfold(-2, block + before + after, block)  # (..., nb, D, W)


def _window_ok(T: int, before: int, after: int, block: int, nb: int, padding, device,
               aligned: bool = False, causal: bool = False):
    """Which (query, key) pairs of the blocked scores are allowed: the band (``aligned``:
    the whole window, in a decoder not after the query), keys inside 0..T-1 and, with
    ``padding`` (B|1, H|1, T), real keys.  # (B|1, H|1, nb, block, W)"""
    W = block + before + after
    r = torch.arange(block, device=device)[:, None]
    c = torch.arange(W, device=device)[None, :]
    d = r - c + before  # query position - key position, the same in every block
    if aligned:
        band = (d >= 0) if causal else torch.ones_like(d, dtype=torch.bool)  # (block, W)
    else:
        band = (d >= -after) & (d <= before)  # (block, W)
    kpos = torch.arange(nb, device=device)[:, None] * block - before + c  # (nb, W)
    ok = band[None] & ((kpos >= 0) & (kpos < T))[:, None, :]  # (nb, block, W)
    if padding is not None:
        real = key_windows(padding[..., None].to(torch.uint8), before, after, block, nb)
        ok = ok & real[..., 0, :].bool()[..., None, :]  # (B|1, H|1, nb, block, W)
    return ok


def _extra_ok(T, before, after, block, nb, extra, causal, padding, device, extra_valid=None):
    """Which (query, extra key) pairs count: ``extra`` (G,) shared by every block: keys not
    already in the query's band; (nb, G) per block: those ``extra_valid`` (nb, G) marks (the
    caller keeps them out of the window). Keys inside 0..T-1; in a decoder not after the
    query; real keys.
    # (B|1, H|1, nb, block, G)"""
    qpos = torch.arange(nb * block, device=device).view(nb, block, 1)
    per_block = extra.dim() == 2
    e = extra[:, None, :] if per_block else extra  # (nb, 1, G) or (G,)
    d = qpos - e  # (nb, block, G): query position - key position
    ok = extra_valid[:, None, :].expand_as(d) if per_block else (d > before) | (d < -after)
    ok = ok & (e < T)  # a key past the end (a block's tail) does not exist
    if causal:
        ok = ok & (d >= 0)
    if padding is not None:
        real = padding[..., extra.clamp(0, T - 1)]  # (B|1, H|1, nb, G) or (B|1, H|1, G)
        ok = ok & (real[..., None, :] if per_block else real[..., None, None, :])
    return ok


def banded_attention(q, k, v, *, before: int, after: int, padding=None, dropout_p: float = 0.0,
                     block: int | None = None, extra=None, extra_valid=None,
                     causal: bool = False, aligned: bool = False):
    """softmax(Q Kᵀ / √d) V where query i sees keys j with i - before <= j <= i + after (and
    ``padding`` True, when given: (B|1, H|1, T) bool, True = a real key), plus the keys at the
    positions ``extra``, each key counted once. ``extra`` (G,) long: the same keys for every
    query (Longformer's global tokens), counted where not in the band; or (nb, G): the keys of
    each query block, counted where ``extra_valid`` (nb, G) says (BigBird's global and random
    blocks). With ``causal`` no key after its query counts. ``aligned`` (then ``block`` is
    required): every query of block n sees the whole window n*block - before .. n*block +
    block - 1 + after (BigBird's neighbouring blocks), not its own band. ``q``, ``k``, ``v``
    (B, H, T, D), the same T and heads; ``block`` defaults to a quarter of the reach (at least
    16): each query then scores about 1.25 x reach keys, not 2 x reach as with block = reach,
    for a few more (cheap) key windows; measured fastest on CPU. A query that sees no key (a
    padding row) attends to its whole window: its output is ignored, and softmax stays free of
    NaN.  # -> (B, H, T, D)"""
    B, H, T, D = q.shape
    block = block or max(16, max(before, after) // 4)
    nb = -(-T // block)
    qb = F.pad(q, (0, 0, 0, nb * block - T)).view(B, H, nb, block, D)  # (B, H, nb, block, D)
    s = qb @ key_windows(k, before, after, block, nb) / math.sqrt(D)  # (B, H, nb, block, W)
    ok = _window_ok(T, before, after, block, nb, padding, q.device, aligned, causal)
    per_block = extra is not None and extra.dim() == 2
    if extra is not None and extra.numel():
        safe = extra.clamp(0, T - 1)
        ke = k[:, :, safe].transpose(-2, -1)  # (B, H, nb, D, G) or (B, H, D, G)
        s = torch.cat([s, qb @ (ke if per_block else ke[:, :, None]) / math.sqrt(D)], -1)
        ok_e = _extra_ok(T, before, after, block, nb, extra, causal, padding, q.device,
                         extra_valid)  # (B|1, H|1, nb, block, G)
        ok = torch.cat(_broadcast_last(ok, ok_e), -1)  # (.., nb, block, W + G)
    ok = ok | ~ok.any(-1, keepdim=True)
    exact = torch.promote_types(s.dtype, torch.float32)  # softmax at least in fp32
    w = torch.softmax(s.masked_fill(~ok, float("-inf")).to(exact), -1).to(q.dtype)
    if dropout_p > 0:
        w = F.dropout(w, dropout_p)
    W = block + before + after
    out = w[..., :W] @ key_windows(v, before, after, block, nb).transpose(-2, -1)
    # (B, H, nb, block, D)
    if w.shape[-1] > W:
        ve = v[:, :, extra.clamp(0, T - 1)]  # (B, H, nb, G, D) or (B, H, G, D)
        out = out + w[..., W:] @ (ve if per_block else ve[:, :, None])
    return out.reshape(B, H, nb * block, D)[:, :, :T]


def _broadcast_last(a, b):
    """a (..., Wa) and b (..., Wb) broadcast in every dimension but the last."""
    shape = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    return [a.expand(*shape, a.shape[-1]), b.expand(*shape, b.shape[-1])]
