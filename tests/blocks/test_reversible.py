"""Reversible residual layers against ordinary autograd through the same coupling, the
activations they save, and the chunked feed-forward against the unchunked one."""

import pytest
import torch
import torch.nn.functional as F

from lmforge.blocks.block import chunked
from lmforge.blocks.feedforward import FeedForward
from lmforge.blocks.reversible import couple
from lmforge.errors import ConfigError
from lmforge.models.causal_lm import CausalLM
from lmforge.models.config import ModelConfig


def rev_model(n_layer=3, dtype=torch.float64, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=29, d_model=24, n_head=4, n_layer=n_layer, context_length=12,
                      reversible=True, **kw)
    return CausalLM(cfg).to(dtype)


def reference_forward(model, ids, padding_mask=None):
    """The same coupling y1 = x1 + F(x2), y2 = x2 + G(y1), by plain autograd (everything
    stored), then the mean of the two streams, the final norm and the head."""
    bb = model.backbone
    x = bb._embed(ids, torch.arange(ids.shape[1]), None)
    mask = padding_mask[:, None, None, :] if padding_mask is not None else None
    x1 = x2 = x
    for i, block in enumerate(bb.layers):
        x1, x2 = couple(block, x1, x2, dict(positions=torch.arange(ids.shape[1]), mask=mask,
                                            bias=None, is_causal=True, layer=i))
    return model.lm_head(bb.norm((x1 + x2) / 2))


def grads(model, loss):
    model.zero_grad()
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("kw", [{}, {"ff_chunks": 3, "activation": "swiglu", "norm": "rmsnorm"}])
def test_same_gradients_as_autograd_through_the_coupling(dtype, tol, kw):
    model = rev_model(dtype=dtype, **kw)
    model.backbone.unpad = False
    ids = torch.randint(0, 29, (2, 12))
    target = torch.randint(0, 29, (2, 12))
    got = model(ids)
    g_rev = grads(model, F.cross_entropy(got.flatten(0, 1), target.flatten()))
    want = reference_forward(model, ids)
    g_ref = grads(model, F.cross_entropy(want.flatten(0, 1), target.flatten()))
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    assert g_rev.keys() == g_ref.keys()
    for name in g_ref:
        torch.testing.assert_close(g_rev[name], g_ref[name], rtol=tol, atol=tol, msg=name)
    assert all(g.abs().max() > 0 for n, g in g_rev.items() if "bias" not in n)


def test_padding_mask_gradients():
    model = rev_model(2)
    ids = torch.randint(0, 29, (3, 10))
    pad = torch.ones(3, 10, dtype=torch.bool)
    pad[1, 7:] = pad[2, 4:] = False
    g_rev = grads(model, (model(ids, padding_mask=pad)[pad]).square().mean())
    g_ref = grads(model, (reference_forward(model, ids, pad)[pad]).square().mean())
    for name in g_ref:
        torch.testing.assert_close(g_rev[name], g_ref[name], rtol=1e-10, atol=1e-10, msg=name)


def saved_bytes(model, ids) -> int:
    """Bytes of tensors autograd keeps for the backward pass of one forward."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(ids).sum()
    return total


def test_activations_kept_do_not_grow_with_depth():
    ids = torch.randint(0, 29, (2, 12))
    rev = [saved_bytes(rev_model(n, torch.float32), ids) for n in (2, 8)]
    plain = []
    for n in (2, 8):
        torch.manual_seed(0)
        plain.append(saved_bytes(CausalLM(ModelConfig(vocab_size=29, d_model=24, n_head=4,
                                                      n_layer=n, context_length=12)), ids))
    assert rev[1] == rev[0]  # only the stack's output is kept, whatever the depth
    assert plain[1] > plain[0] + 5 * (plain[0] - rev[0]) / 2  # ordinary layers keep theirs


def test_inference_without_gradients_matches():
    model = rev_model(3)
    ids = torch.randint(0, 29, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), reference_forward(model, ids), rtol=0, atol=0)


@pytest.mark.parametrize("chunks", [2, 3, 5, 64])
def test_chunked_feed_forward_equals_unchunked(chunks):
    """The same arithmetic per position; BLAS may block a matrix product differently for
    another row count, so fp32 agrees to rounding (about 1e-7), fp64 to about 1e-16."""
    torch.manual_seed(0)
    ff = FeedForward(16, 40, "gelu").double()
    x = torch.randn(2, 11, 16, dtype=torch.float64)
    whole = ff(x)
    got = chunked(ff, x, chunks)
    torch.testing.assert_close(got, whole, rtol=1e-14, atol=1e-14)
    rows = torch.stack([ff(x[:, t]) for t in range(11)], dim=1)  # one position at a time
    torch.testing.assert_close(got, rows, rtol=1e-14, atol=1e-14)
    naive = F.gelu(x @ ff.up_proj.weight.T + ff.up_proj.bias) @ ff.down_proj.weight.T + ff.down_proj.bias
    torch.testing.assert_close(whole, naive, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(chunked(ff.float(), x.float(), chunks), ff(x.float()),
                                   rtol=1e-6, atol=1e-6)


def test_chunked_model_equals_unchunked_model():
    ids = torch.randint(0, 29, (2, 12))
    out = []
    for chunks in (1, 4):
        torch.manual_seed(0)
        m = CausalLM(ModelConfig(vocab_size=29, d_model=24, n_head=4, n_layer=2,
                                 context_length=12, ff_chunks=chunks)).double()
        out.append(m(ids))
    torch.testing.assert_close(out[0], out[1], rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("kw", [dict(dropout=0.1), dict(prenorm=False), dict(arch="seq2seq"),
                                dict(positional="relative", memory_length=4)])
def test_refused_configs(kw):
    with pytest.raises(ConfigError, match="model.reversible"):
        ModelConfig(vocab_size=10, d_model=16, n_head=2, reversible=True, **kw)
    with pytest.raises(ConfigError, match="model.ff_chunks"):
        ModelConfig(vocab_size=10, d_model=16, n_head=2, ff_chunks=0)


def test_reversible_kv_cache_decoding_equals_full_forward():
    model = rev_model(2).eval()
    ids = torch.randint(0, 29, (2, 9))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache(2)
        steps = [model(ids[:, :4], cache=cache)] + [model(ids[:, t:t + 1], cache=cache)
                                                    for t in range(4, 9)]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-10, atol=1e-10)
