"""Blocked (banded) attention: exact softmax attention where query i sees only the keys
i - before .. i + after, in O(T x (block + before + after)) time and memory instead of O(T²).

The queries are cut into blocks of ``block`` positions; block n sees the keys
n*block - before .. n*block + block - 1 + after, a window of W = block + before + after keys
taken from K and V by ``unfold`` (a strided view of the padded tensors, no (T, T) anything):

    q   (B, H, T, D)  -> (B, H, nb, block, D)
    k,v (B, H, T, D)  -> (B, H, nb, W, D)        window of block n
    scores            =  (B, H, nb, block, W)     + a (block, W) band mask and key padding

Used by ``sliding_window`` (before = window - 1, after = 0) when the sequence is long enough
for it to pay (:func:`blocked_pays`), and by ``longformer`` without dilation (before = after =
w, or w - 1 and 0 in a decoder; the global tokens as ``extra`` keys of every query); the dense
masked paths stay the reference. See docs/attention.md.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["MIN_BLOCKS", "banded_attention", "blocked_pays", "key_padding"]

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


def _windows(t: torch.Tensor, before: int, after: int, block: int, nb: int) -> torch.Tensor:
    """(..., T, D) -> (..., nb, D, W): the keys of each query block, a view of the padded t."""
    T = t.shape[-2]
    padded = F.pad(t, (0, 0, before, nb * block - T + after))  # (..., before + nb*block + after, D)
    return padded.unfold(-2, block + before + after, block)  # (..., nb, D, W)


def _window_ok(T: int, before: int, after: int, block: int, nb: int, padding, device):
    """Which (query, key) pairs of the blocked scores are allowed: the band, keys inside
    0..T-1 and, with ``padding`` (B|1, H|1, T), real keys.  # (B|1, H|1, nb, block, W)"""
    W = block + before + after
    r = torch.arange(block, device=device)[:, None]
    c = torch.arange(W, device=device)[None, :]
    d = r - c + before  # query position - key position, the same in every block
    band = (d >= -after) & (d <= before)  # (block, W)
    kpos = torch.arange(nb, device=device)[:, None] * block - before + c  # (nb, W)
    ok = band[None] & ((kpos >= 0) & (kpos < T))[:, None, :]  # (nb, block, W)
    if padding is not None:
        real = _windows(padding[..., None].to(torch.uint8), before, after, block, nb)
        ok = ok & real[..., 0, :].bool()[..., None, :]  # (B|1, H|1, nb, block, W)
    return ok


def _extra_ok(T, before, after, block, nb, extra, causal, padding, device):
    """Which (query, extra key) pairs count: not already in the query's band, in a decoder
    not after the query, and real keys.  # (B|1, H|1, nb, block, G)"""
    qpos = torch.arange(nb * block, device=device).view(nb, block, 1)
    d = qpos - extra  # (nb, block, G): query position - key position
    ok = (d > before) | (d < -after)
    if causal:
        ok = ok & (d >= 0)
    if padding is not None:
        ok = ok & padding[..., None, None, extra]  # (B|1, H|1, nb, block, G)
    return ok


def banded_attention(q, k, v, *, before: int, after: int, padding=None, dropout_p: float = 0.0,
                     block: int | None = None, extra=None, causal: bool = False):
    """softmax(Q Kᵀ / √d) V where query i sees keys j with i - before <= j <= i + after (and
    ``padding`` True, when given: (B|1, H|1, T) bool, True = a real key), plus the keys at the
    positions ``extra`` ((G,) long: Longformer's global tokens; with ``causal`` only from the
    queries at or after them), each key counted once. ``q``, ``k``, ``v`` (B, H, T, D), the
    same T and heads; ``block`` defaults to a quarter of the reach (at least 16): each query
    then scores about 1.25 x reach keys, not 2 x reach as with block = reach, for a few more
    (cheap) key windows; measured fastest on CPU. A query that sees no key (a padding row)
    attends to its whole window: its output is ignored, and softmax stays free of NaN.
    # -> (B, H, T, D)"""
    B, H, T, D = q.shape
    block = block or max(16, max(before, after) // 4)
    nb = -(-T // block)
    qb = F.pad(q, (0, 0, 0, nb * block - T)).view(B, H, nb, block, D)  # (B, H, nb, block, D)
    s = qb @ _windows(k, before, after, block, nb) / math.sqrt(D)  # (B, H, nb, block, W)
    ok = _window_ok(T, before, after, block, nb, padding, q.device)
    if extra is not None and extra.numel():
        ke = k[:, :, extra].transpose(-2, -1)[:, :, None]  # (B, H, 1, D, G)
        s = torch.cat([s, qb @ ke / math.sqrt(D)], -1)  # (B, H, nb, block, W + G)
        ok_e = _extra_ok(T, before, after, block, nb, extra, causal, padding, q.device)
        ok = torch.cat(_broadcast_last(ok, ok_e), -1)
    ok = ok | ~ok.any(-1, keepdim=True)
    exact = torch.promote_types(s.dtype, torch.float32)  # softmax at least in fp32
    w = torch.softmax(s.masked_fill(~ok, float("-inf")).to(exact), -1).to(q.dtype)
    if dropout_p > 0:
        w = F.dropout(w, dropout_p)
    W = block + before + after
    out = w[..., :W] @ _windows(v, before, after, block, nb).transpose(-2, -1)
    # (B, H, nb, block, D)
    if w.shape[-1] > W:
        out = out + w[..., W:] @ v[:, :, extra][:, :, None]  # (B, H, 1, G, D)
    return out.reshape(B, H, nb * block, D)[:, :, :T]


def _broadcast_last(a, b):
    """a (..., Wa) and b (..., Wb) broadcast in every dimension but the last."""
    shape = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    return [a.expand(*shape, a.shape[-1]), b.expand(*shape, b.shape[-1])]
