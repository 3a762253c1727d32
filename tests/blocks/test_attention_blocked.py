"""The blocked (banded) attention paths against the whole-mask reference: ``sliding_window``
and :func:`banded_attention` against softmax over a (T, T) mask written out here, and the
blocked/gathered ``longformer`` / ``bigbird`` / ``sparse_strided`` / ``sparse_fixed`` paths against
their own dense path (the pattern as a whole mask, taken when the weights are asked): forward
values and gradients in float64, causal and bidirectional, with and without padding, global
tokens, dilation, T not divisible by the block; and no (T, T) mask built on the blocked path."""

import math

import pytest
import torch

from lmforge.blocks import AttentionOptions, attention_forward
from lmforge.blocks import attention_backends as ab
from lmforge.blocks.attention_blocked import banded_attention, blocked_pays
from lmforge.blocks.sparse_patterns import (
    BigBirdSettings,
    FixedSettings,
    LongformerSettings,
    StridedSettings,
)

TOL = {"atol": 1e-5, "rtol": 1e-5}


def qkv(T, B=2, H=4, Hkv=4, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, h, T, D, generator=g, dtype=torch.float64).requires_grad_(True)
            for h in (H, Hkv, Hkv)]


def naive(q, k, v, allowed):
    """softmax(Q Kᵀ / √d) V over ``allowed`` (broadcast to (B, H, T, T)), written out."""
    k = k.repeat_interleave(q.shape[1] // k.shape[1], 1)
    v = v.repeat_interleave(q.shape[1] // v.shape[1], 1)
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    allowed = allowed | ~allowed.any(-1, keepdim=True)
    return torch.softmax(s.masked_fill(~allowed, -math.inf), -1) @ v


def band(T, before, after):
    d = torch.arange(T)[:, None] - torch.arange(T)[None, :]  # query - key
    return (d >= -after) & (d <= before)


def padding(T, real):
    m = torch.ones(2, T, dtype=torch.bool)
    m[1, real:] = False
    return m


def assert_same(out, ref, inputs, rows=None):
    """Values equal, and the gradients of a random projection of the (real) outputs."""
    rows = rows if rows is not None else torch.ones(out.shape[0], out.shape[2], dtype=bool)
    g = torch.Generator().manual_seed(1)
    proj = torch.randn(out.shape, generator=g, dtype=out.dtype) * rows[:, None, :, None]
    torch.testing.assert_close(out * rows[:, None, :, None], ref * rows[:, None, :, None], **TOL)
    ga = torch.autograd.grad((out * proj).sum(), inputs, retain_graph=True)
    gb = torch.autograd.grad((ref * proj).sum(), inputs, retain_graph=True)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("T,before,after,block", [(37, 3, 3, None), (40, 4, 0, 4),
                                                  (29, 0, 5, 7), (50, 6, 2, 3), (5, 9, 9, None)])
@pytest.mark.parametrize("padded", [False, True])
def test_banded_equals_band_mask(T, before, after, block, padded):
    q, k, v = qkv(T)
    real = padding(T, T - 6) if padded else torch.ones(2, T, dtype=torch.bool)
    out = banded_attention(q, k, v, before=before, after=after, block=block,
                           padding=real[:, None, :] if padded else None)
    ref = naive(q, k, v, band(T, before, after) & real[:, None, None, :])
    assert_same(out, ref, (q, k, v), rows=real)


@pytest.mark.parametrize("T,window", [(37, 4), (64, 8), (33, 8), (45, 11)])
@pytest.mark.parametrize("padded", [False, True])
def test_sliding_window_blocked_equals_whole_mask(T, window, padded):
    assert blocked_pays(T, window)
    q, k, v = qkv(T, Hkv=2)  # grouped-query heads
    real = padding(T, T - 5) if padded else torch.ones(2, T, dtype=torch.bool)
    mask = real[:, None, None, :] if padded else None
    opts = AttentionOptions(window=window)
    out, _ = attention_forward("sliding_window", q, k, v, mask=mask, is_causal=True,
                               options=opts)
    ref = naive(q, k, v, band(T, window - 1, 0) & real[:, None, None, :])
    assert_same(out, ref, (q, k, v), rows=real)
    dense, _ = attention_forward("explicit", q, k, v, mask=mask, is_causal=True, options=opts)
    torch.testing.assert_close(out * real[:, None, :, None], dense * real[:, None, :, None],
                               **TOL)


def test_sliding_window_padding_never_changes_real_tokens():
    q, k, v = qkv(50)
    opts = AttentionOptions(window=6)
    short, _ = attention_forward("sliding_window", *(t[:, :, :33] for t in (q, k, v)),
                                 is_causal=True, options=opts)
    real = torch.zeros(2, 50, dtype=torch.bool)
    real[:, :33] = True
    padded, _ = attention_forward("sliding_window", q, k, v, mask=real[:, None, None, :],
                                  is_causal=True, options=opts)
    torch.testing.assert_close(padded[:, :, :33], short, **TOL)


SPARSE = {
    "longformer": LongformerSettings(local_window=4, global_tokens=[0, 21]),
    "longformer_dilated": LongformerSettings(local_window=3, global_tokens=[5], dilation=2),
    "longformer_no_globals": LongformerSettings(local_window=5, global_tokens=[]),
    "bigbird": BigBirdSettings(block_size=6, random_blocks=2),
    "bigbird_wide": BigBirdSettings(block_size=5, window_blocks=5, global_blocks=2,
                                    random_blocks=1),
    "bigbird_no_globals": BigBirdSettings(block_size=4, global_blocks=0, random_blocks=3),
    "sparse_strided": StridedSettings(stride=5),
    "sparse_fixed": FixedSettings(block_size=7, summary=2),
}


@pytest.mark.parametrize("key", list(SPARSE))
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_gathered_equals_whole_mask_path(key, causal, padded):
    name, T = key.split("_")[0] if key.startswith(("longformer", "bigbird")) else key, 47
    q, k, v = qkv(T, H=2, Hkv=2)
    real = padding(T, 30) if padded else torch.ones(2, T, dtype=torch.bool)
    kw = {"mask": real[:, None, None, :] if padded else None, "is_causal": causal,
          "options": AttentionOptions(settings=SPARSE[key])}
    out, w = attention_forward(name, q, k, v, **kw)
    assert w is None  # the gathered path
    ref, weights = attention_forward(name, q, k, v, need_weights=True, **kw)  # whole mask
    assert weights is not None
    assert_same(out, ref, (q, k, v), rows=real)


@pytest.mark.parametrize("name,settings", [
    ("sliding_window", None), ("longformer", LongformerSettings(local_window=4)),
    ("bigbird", BigBirdSettings(block_size=4)), ("sparse_strided", StridedSettings(stride=4)),
    ("sparse_fixed", FixedSettings(block_size=4, summary=1))])
def test_blocked_path_builds_no_whole_mask(monkeypatch, name, settings):
    """Causal and padded: neither the dispatcher nor the backend builds a (T, T) mask."""
    def refuse(*a, **kw):
        raise AssertionError("a (T, T) causal mask was built")
    monkeypatch.setattr(ab, "causal_mask", refuse)
    q, k, v = qkv(40)
    real = padding(40, 31)
    out, _ = attention_forward(name, q, k, v, mask=real[:, None, None, :], is_causal=True,
                               options=AttentionOptions(window=4 if name == "sliding_window"
                                                        else 0, settings=settings))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name,settings", [("bigbird", BigBirdSettings(block_size=4)),
                                           ("sparse_strided", StridedSettings(stride=4))])
def test_window_is_a_view_not_a_gather(monkeypatch, name, settings):
    """bigbird's neighbouring blocks and sparse_strided's band come from a strided view of K
    and V (key_windows), not from the gathered path that copies each block's keys."""
    from lmforge.blocks import attention_sparse

    def refuse(*a, **kw):
        raise AssertionError("the gathered path was taken")
    monkeypatch.setattr(attention_sparse, "_gathered", refuse)
    q, k, v = qkv(40)
    real = padding(40, 31)
    for causal in (False, True):
        out, _ = attention_forward(name, q, k, v, mask=real[:, None, None, :], is_causal=causal,
                                   options=AttentionOptions(settings=settings))
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("causal", [False, True])
def test_aligned_window_with_per_block_extra_keys(causal):
    """banded_attention(aligned=True, extra=(nb, G)): every query of block n sees the whole
    window of blocks n-1 .. n+1 (a decoder: n-1 .. n, not after itself) and the extra keys its
    block lists (distinct, outside its window) where ``extra_valid`` says, against softmax
    over that mask written out."""
    T, bs = 30, 4
    nb = -(-T // bs)
    q, k, v = qkv(T)
    g = torch.Generator().manual_seed(1)
    outside = [[p for p in range(T + 3) if abs(p // bs - n) > 1] for n in range(nb)]
    extra = torch.tensor([[o[int(i)] for i in torch.randperm(len(o), generator=g)[:3]]
                          for o in outside])  # distinct keys outside the window, some >= T
    valid = torch.rand(nb, 3, generator=g) > 0.3
    real = padding(T, 26)
    out = banded_attention(q, k, v, before=bs, after=0 if causal else bs, block=bs,
                           padding=real[:, None, :], extra=extra, extra_valid=valid,
                           causal=causal, aligned=True)
    qpos, kpos = torch.arange(T)[:, None], torch.arange(T)[None, :]
    qb, kb = qpos // bs, kpos // bs
    allowed = (kb >= qb - 1) & (kb <= (qb if causal else qb + 1))
    for n in range(nb):
        for e, ok in zip(extra[n].tolist(), valid[n].tolist()):
            if ok and e < T:
                allowed[n * bs:(n + 1) * bs, e] = True
    if causal:
        allowed = allowed & (kpos <= qpos)
    ref = naive(q, k, v, allowed & real[:, None, None, :])
    assert_same(out, ref, (q, k, v), rows=real)


def test_threshold():
    assert blocked_pays(16, 4) and not blocked_pays(15, 4) and not blocked_pays(100, 0)


@pytest.mark.parametrize("T,window", [(37, 4), (64, 8), (12, 5)])  # blocked, blocked, dense
@pytest.mark.parametrize("padded", [False, True])
def test_sliding_window_in_an_encoder_reaches_both_ways(T, window, padded):
    """Not causal (an encoder): query i sees the keys j with |i - j| < window, on the blocked
    path (T >= 4 windows) and the dense one, against softmax over that band written out."""
    q, k, v = qkv(T, Hkv=2)
    real = padding(T, T - 5) if padded else torch.ones(2, T, dtype=torch.bool)
    mask = real[:, None, None, :] if padded else None
    opts = AttentionOptions(window=window)
    out, _ = attention_forward("sliding_window", q, k, v, mask=mask, options=opts)
    ref = naive(q, k, v, band(T, window - 1, window - 1) & real[:, None, None, :])
    assert_same(out, ref, (q, k, v), rows=real)
    dense, _ = attention_forward("explicit", q, k, v, mask=mask, options=opts)  # the mask path
    torch.testing.assert_close(out * real[:, None, :, None], dense * real[:, None, :, None],
                               **TOL)


def test_bigbird_under_a_per_query_mask_gathers_and_equals_the_whole_mask_path():
    """A mask that differs per query (not a key-padding mask) sends bigbird to the gathered
    path, which must still equal the pattern applied as a whole mask."""
    q, k, v = qkv(47, H=2, Hkv=2)
    g = torch.Generator().manual_seed(3)
    per_query = torch.rand(2, 1, 47, 47, generator=g) > 0.2  # (B, 1, T, T)
    kw = {"mask": per_query, "options": AttentionOptions(settings=SPARSE["bigbird_wide"])}
    out, w = attention_forward("bigbird", q, k, v, **kw)
    ref, weights = attention_forward("bigbird", q, k, v, need_weights=True, **kw)
    assert w is None and weights is not None
    assert_same(out, ref, (q, k, v))
