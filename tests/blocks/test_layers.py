import torch
import torch.nn.functional as F

from lmforge.blocks import FeedForward, LayerNorm, RMSNorm, TokenEmbedding, TransformerBlock
from lmforge.blocks import MultiHeadAttention


def test_rmsnorm_formula_and_gradcheck():
    n = RMSNorm(6, eps=1e-6).double()
    with torch.no_grad():
        n.weight.copy_(torch.arange(1.0, 7.0))
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    ref = x / torch.sqrt((x ** 2).mean(-1, keepdim=True) + 1e-6) * n.weight
    torch.testing.assert_close(n(x), ref)
    assert torch.autograd.gradcheck(n, (x,))


def test_layernorm_matches_torch_and_no_bias_option():
    x = torch.randn(4, 8)
    torch.testing.assert_close(LayerNorm(8)(x), torch.nn.LayerNorm(8)(x))
    assert LayerNorm(8, bias=False).bias is None


def test_feedforward_variants():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8)
    ff = FeedForward(8, 16, "swiglu", bias=False)
    ref = ff.down_proj(F.silu(ff.gate_proj(x)) * ff.up_proj(x))
    torch.testing.assert_close(ff(x), ref)
    for act, fn in (("relu", F.relu), ("gelu", F.gelu),
                    ("gelu_tanh", lambda t: F.gelu(t, approximate="tanh"))):
        ff = FeedForward(8, 16, act)
        torch.testing.assert_close(ff(x), ff.down_proj(fn(ff.up_proj(x))))


def test_embedding_scale():
    e = TokenEmbedding(10, 4, scale=True)
    torch.testing.assert_close(e(torch.tensor([3])), e.weight[3:4] * 2.0)


def test_pre_and_post_norm_blocks():
    torch.manual_seed(0)
    attn, ff = MultiHeadAttention(8, 2), FeedForward(8, 16)
    n1, n2 = LayerNorm(8), LayerNorm(8)
    x = torch.randn(1, 4, 8)
    pre = TransformerBlock(attn, ff, n1, n2, prenorm=True)
    h = x + attn(n1(x), is_causal=True)
    torch.testing.assert_close(pre(x, is_causal=True), h + ff(n2(h)))
    post = TransformerBlock(attn, ff, n1, n2, prenorm=False)
    h = n1(x + attn(x, is_causal=True))
    torch.testing.assert_close(post(x, is_causal=True), n2(h + ff(h)))
