import math

import pytest
import torch

from lmforge.blocks import MultiHeadAttention, alibi_bias, alibi_slopes, causal_mask
from lmforge.blocks import scaled_dot_product_attention as sdpa


def naive(q, k, v, allowed=None, bias=None):
    """softmax(Q Kᵀ / sqrt(d) + bias) V, one (batch, head, query) at a time."""
    B, H, Tq, D = q.shape
    out = torch.zeros_like(q)
    for b in range(B):
        for h in range(H):
            for i in range(Tq):
                s = [float(q[b, h, i] @ k[b, h, j]) / math.sqrt(D) for j in range(k.shape[2])]
                if bias is not None:
                    s = [x + float(bias[h, i, j]) for j, x in enumerate(s)]
                if allowed is not None:
                    s = [x if allowed[b, i, j] else -math.inf for j, x in enumerate(s)]
                m = max(s)
                e = [math.exp(x - m) for x in s]
                z = sum(e)
                out[b, h, i] = sum(w / z * v[b, h, j] for j, w in enumerate(e))
    return out


@pytest.fixture
def qkv():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64) for _ in range(3)]


@pytest.mark.parametrize("backend", ["fused", "explicit"])
def test_no_mask_matches_naive(qkv, backend):
    q, k, v = qkv
    y, _ = sdpa(q, k, v, backend=backend)
    torch.testing.assert_close(y, naive(q, k, v))


@pytest.mark.parametrize("backend", ["fused", "explicit"])
def test_causal_matches_naive(qkv, backend):
    q, k, v = qkv
    allowed = causal_mask(5, 5).expand(2, 5, 5)
    y, _ = sdpa(q, k, v, is_causal=True, backend=backend)
    torch.testing.assert_close(y, naive(q, k, v, allowed))


@pytest.mark.parametrize("backend", ["fused", "explicit"])
def test_padding_and_causal_mask(qkv, backend):
    q, k, v = qkv
    pad = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]], dtype=torch.bool)  # left padding
    allowed = causal_mask(5, 5)[None] & pad[:, None, :]
    y, _ = sdpa(q, k, v, mask=pad[:, None, None, :], is_causal=True, backend=backend)
    ref = naive(q, k, v, allowed | ~allowed.any(-1, keepdim=True))
    # rows of real tokens must match; padded query rows are ignored but must be finite
    torch.testing.assert_close(y[0], ref[0])
    torch.testing.assert_close(y[1, :, 2:], ref[1, :, 2:])
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("backend", ["fused", "explicit"])
def test_alibi_bias_with_causal(qkv, backend):
    q, k, v = qkv
    pos = torch.arange(5)
    bias = alibi_bias(alibi_slopes(3).double(), pos, pos)
    allowed = causal_mask(5, 5).expand(2, 5, 5)
    y, _ = sdpa(q, k, v, bias=bias, is_causal=True, backend=backend)
    torch.testing.assert_close(y, naive(q, k, v, allowed, bias))


def test_cached_queries_use_offset_causal_mask(qkv):
    """3 new queries against 5 keys: query i sees keys 0..2+i (the last 3 are its own)."""
    q, k, v = qkv
    allowed = causal_mask(3, 5).expand(2, 3, 5)
    assert allowed[0].int().tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    for backend in ("fused", "explicit"):
        y, _ = sdpa(q[:, :, 2:], k, v, is_causal=True, backend=backend)
        torch.testing.assert_close(y, naive(q[:, :, 2:], k, v, allowed))


def test_explicit_returns_weights(qkv):
    q, k, v = qkv
    y, w = sdpa(q, k, v, is_causal=True, backend="explicit", need_weights=True)
    assert w.shape == (2, 3, 5, 5)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 5, dtype=w.dtype))
    assert (w.triu(1) == 0).all()  # nothing on future keys
    torch.testing.assert_close(w @ v, y)


def test_gradcheck_explicit():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
               for _ in range(3))
    assert torch.autograd.gradcheck(
        lambda a, b, c: sdpa(a, b, c, is_causal=True, backend="explicit")[0], (q, k, v))


def test_grouped_query_equals_repeated_heads():
    torch.manual_seed(0)
    gqa = MultiHeadAttention(16, n_head=4, n_kv_head=2, bias=False).double()
    mha = MultiHeadAttention(16, n_head=4, n_kv_head=4, bias=False).double()
    with torch.no_grad():
        mha.q_proj.weight.copy_(gqa.q_proj.weight)
        mha.o_proj.weight.copy_(gqa.o_proj.weight)
        # kv head j serves query heads 2j and 2j+1
        for proj in ("k_proj", "v_proj"):
            w = getattr(gqa, proj).weight.view(2, 4, 16)
            getattr(mha, proj).weight.copy_(w.repeat_interleave(2, dim=0).reshape(16, 16))
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    torch.testing.assert_close(gqa(x, is_causal=True), mha(x, is_causal=True))
    assert gqa.k_proj.weight.shape == (8, 16)  # half the key/value parameters


def test_multi_query_runs_and_backends_agree():
    torch.manual_seed(0)
    attn = MultiHeadAttention(16, n_head=4, n_kv_head=1).double()
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    a = attn(x, is_causal=True)
    attn.backend = "explicit"
    weights: list = []
    b = attn(x, is_causal=True, attn_out=weights)
    torch.testing.assert_close(a, b)
    assert weights[0].shape == (2, 4, 6, 6)
