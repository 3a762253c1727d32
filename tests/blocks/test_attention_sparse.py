"""Pattern-sparse backends (longformer, bigbird, sparse_strided, sparse_fixed, full) against a
naive masked softmax written out here: the patterns by their definition (loops), full attention
where the pattern covers everything, no future leakage (exact zero gradients), padding
invariance, models built through ModelConfig, and the option errors."""

import math

import pytest
import torch

from lmforge.blocks import ATTENTION_BACKENDS, AttentionOptions, attention_forward
from lmforge.blocks.sparse_patterns import (
    BigBirdSettings,
    FixedSettings,
    LongformerSettings,
    StridedSettings,
    pattern_mask,
)
from lmforge.errors import ConfigError
from lmforge.models import ModelConfig, build_model

SPARSE = {
    "longformer": LongformerSettings(local_window=4, global_tokens=[0, 21], dilation=2),
    "bigbird": BigBirdSettings(block_size=6, random_blocks=2),
    "sparse_strided": StridedSettings(stride=5),
    "sparse_fixed": FixedSettings(block_size=7, summary=2),
}


def naive(q, k, v, allowed):
    """softmax(Q Kᵀ / √d) V with ``allowed`` (broadcast to (B, H, Tq, Tk)) written out; an
    all-False row attends to everything."""
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    allowed = allowed | ~allowed.any(-1, keepdim=True)
    return torch.softmax(s.masked_fill(~allowed, -math.inf), -1) @ v


def qkv(T, B=2, H=3, D=8, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, T, D, generator=g, dtype=torch.float64).requires_grad_(grad)
            for _ in range(3)]


def run(name, settings, q, k, v, **kw):
    return attention_forward(name, q, k, v, options=AttentionOptions(settings=settings), **kw)


def loop_pattern(name, s, T, causal):
    """The patterns from the papers' definitions, one (i, j) at a time."""
    def ok(i, j):
        d = i - j
        if name == "longformer":
            reach = s.local_window * s.dilation
            local = (0 <= d < reach) if causal else abs(d) <= reach
            return (local and d % s.dilation == 0) or i in s.global_tokens or j in s.global_tokens
        if name == "sparse_strided":
            local = (0 <= d < s.stride) if causal else abs(d) < s.stride
            return local or d % s.stride == 0
        if name == "sparse_fixed":
            return i // s.block_size == j // s.block_size or \
                j % s.block_size >= s.block_size - s.summary
        raise AssertionError(name)
    m = torch.tensor([[ok(i, j) and (not causal or j <= i) for j in range(T)] for i in range(T)])
    return m


@pytest.mark.parametrize("name", ["longformer", "sparse_strided", "sparse_fixed"])
@pytest.mark.parametrize("causal", [False, True])
def test_pattern_mask_is_the_definition(name, causal):
    s = SPARSE[name]
    assert torch.equal(pattern_mask(name, s, 31, causal), loop_pattern(name, s, 31, causal))


def test_bigbird_pattern_blocks():
    s = BigBirdSettings(block_size=4, random_blocks=1, global_blocks=1)
    m = pattern_mask("bigbird", s, 40, False)
    blocks = m[::4, ::4]  # (10, 10): block-level
    assert blocks[0].all() and blocks[:, 0].all()  # the global block
    for i in range(10):
        for j in range(10):
            if abs(i - j) <= 1:
                assert blocks[i, j]
    rand = blocks.clone()
    rand[0], rand[:, 0] = False, False
    for i in range(10):
        rand[i, max(0, i - 1):i + 2] = False
    lower = torch.tril(rand)
    assert (lower.sum(1)[3:] == 1).all()  # one random earlier block per row with a choice
    assert lower[:3].sum() == 0  # rows 0-2: nothing outside the window and the global
    assert torch.equal(rand, rand.T)  # encoder: symmetric
    # the blocks of a shorter sequence are the start of the longer one's (padding invariance)
    assert torch.equal(pattern_mask("bigbird", s, 24, False), m[:24, :24])


@pytest.mark.parametrize("name", list(SPARSE))
@pytest.mark.parametrize("causal", [False, True])
def test_equals_naive_masked_softmax_with_padding(name, causal):
    T = 45
    q, k, v = qkv(T)
    real = torch.ones(2, T, dtype=torch.bool)
    real[1, 31:] = False
    out, _ = run(name, SPARSE[name], q, k, v, mask=real[:, None, None, :], is_causal=causal)
    ref = naive(q, k, v, pattern_mask(name, SPARSE[name], T, causal) & real[:, None, None, :])
    torch.testing.assert_close(out[0], ref[0])
    torch.testing.assert_close(out[1, :, :31], ref[1, :, :31])
    # the dense path (weights asked) computes the same and returns the masked weights
    out_w, w = run(name, SPARSE[name], q, k, v, mask=real[:, None, None, :], is_causal=causal,
                   need_weights=True)
    torch.testing.assert_close(out_w[0], ref[0])
    assert not w[0][:, ~pattern_mask(name, SPARSE[name], T, causal)].any()


FULL_COVER = {
    "longformer": [LongformerSettings(local_window=40), LongformerSettings(
        local_window=1, global_tokens=list(range(40)))],
    "bigbird": [BigBirdSettings(block_size=8, global_blocks=5), BigBirdSettings(block_size=40)],
    "sparse_strided": [StridedSettings(stride=40)],
    "sparse_fixed": [FixedSettings(block_size=40, summary=1)],
}


@pytest.mark.parametrize("name", list(FULL_COVER))
@pytest.mark.parametrize("causal", [False, True])
def test_covering_pattern_is_full_attention(name, causal):
    q, k, v = qkv(40)
    ref, _ = attention_forward("explicit", q, k, v, is_causal=causal)
    full, _ = attention_forward("full", q, k, v, is_causal=causal)
    torch.testing.assert_close(full, ref)
    for s in FULL_COVER[name]:
        out, _ = run(name, s, q, k, v, is_causal=causal)
        torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("name", list(SPARSE))
def test_causal_never_sees_the_future(name):
    T = 30
    q, k, v = qkv(T, B=1, grad=True)
    out, _ = run(name, SPARSE[name], q, k, v, is_causal=True)
    for i in (0, 7, 20):
        gq, gk, gv = torch.autograd.grad(out[:, :, i].sum(), (q, k, v), retain_graph=True)
        for g in (gq, gk, gv):
            assert (g[:, :, i + 1:] == 0).all()
        assert gv[:, :, i].abs().sum() > 0  # it does see itself


@pytest.mark.parametrize("name", list(SPARSE))
def test_padding_never_changes_real_tokens(name):
    q, k, v = qkv(50)
    short, _ = run(name, SPARSE[name], *(t[:, :, :33] for t in (q, k, v)))
    real = torch.zeros(2, 50, dtype=torch.bool)
    real[:, :33] = True
    padded, _ = run(name, SPARSE[name], q, k, v, mask=real[:, None, None, :])
    torch.testing.assert_close(padded[:, :, :33], short)


def test_bigbird_random_blocks_differ_per_layer_and_are_saved():
    torch.manual_seed(0)
    cfg = ModelConfig(arch="encoder", vocab_size=50, d_model=16, n_head=2, n_layer=2,
                      d_ff=32, context_length=64, attention="bigbird")
    model = build_model(cfg)
    seeds = [b for n, b in model.named_buffers() if n.endswith("backend_state.seed")]
    assert len(seeds) == 2 and seeds[0] != seeds[1]
    assert any(k.endswith("backend_state.seed") for k in model.state_dict())


@pytest.mark.parametrize("arch", ["encoder", "decoder"])
@pytest.mark.parametrize("name", [*SPARSE, "full"])
def test_models_run_forward_backward(arch, name):
    table = {"longformer": {"local_window": 3, "global_tokens": [0]},
             "bigbird": {"block_size": 4, "random_blocks": 1},
             "sparse_strided": {"stride": 4},
             "sparse_fixed": {"block_size": 4, "summary": 1}}.get(name)
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, vocab_size=40, d_model=16, n_head=2, n_layer=2, d_ff=32,
                      context_length=32, attention=name, attention_options=table)
    model = build_model(cfg)
    idx = torch.randint(0, 40, (2, 24))
    ref = build_model(ModelConfig(arch=arch, vocab_size=40, d_model=16, n_head=2, n_layer=2,
                                  d_ff=32, context_length=32, attention="explicit"))
    ref.load_state_dict(model.state_dict(), strict=False)
    out = model(idx)
    logits = out if torch.is_tensor(out) else out.mlm_logits
    logits.float().pow(2).mean().backward()
    grads = [p.grad for n, p in model.named_parameters()
             if n.endswith(("q_proj.weight", "k_proj.weight"))]
    assert len(grads) == 4 and all(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    if name == "full":  # exact attention: the same logits as explicit
        r = ref(idx)
        torch.testing.assert_close(logits, r if torch.is_tensor(r) else r.mlm_logits)


@pytest.mark.parametrize("table, key", [
    ({"local_window": 0}, "local_window"), ({"global_tokens": [-1]}, "global_tokens"),
    ({"dilation": 0}, "dilation"), ({"windo": 3}, "windo")])
def test_bad_longformer_options_name_the_key(table, key):
    with pytest.raises(ConfigError, match=rf"model\.attention_options\.{key}"):
        ModelConfig(arch="encoder", attention="longformer", attention_options=table)


@pytest.mark.parametrize("name, table, key", [
    ("bigbird", {"block_size": 0}, "block_size"), ("bigbird", {"window_blocks": 2},
                                                   "window_blocks"),
    ("sparse_strided", {"stride": 0}, "stride"),
    ("sparse_fixed", {"block_size": 4, "summary": 5}, "summary")])
def test_bad_options_name_the_key(name, table, key):
    with pytest.raises(ConfigError, match=rf"model\.attention_options\.{key}"):
        ModelConfig(arch="encoder", attention=name, attention_options=table)


def test_registered_with_weights():
    for name in [*SPARSE, "full"]:
        assert ATTENTION_BACKENDS[name].returns_weights
    assert ATTENTION_BACKENDS["bigbird"].make_state is not None


def test_full_is_fused_a_causal_call_builds_no_mask(monkeypatch):
    """``full`` is registered like ``fused``: a plain causal call with grouped-query heads
    reaches torch's kernel without a (T, T) mask (measured 5x faster than with one at 16k),
    and with the weights asked it is ``explicit`` under the causal mask; both equal the
    causal softmax written out."""
    from lmforge.blocks import attention_backends as ab

    q, _, _ = qkv(24, H=4)
    _, k, v = qkv(24, H=2, seed=1)  # two key/value heads for four query heads
    kr, vr = (t.repeat_interleave(2, 1) for t in (k, v))
    ref = naive(q, kr, vr, torch.ones(24, 24, dtype=torch.bool).tril())

    def refuse(*a, **kw):
        raise AssertionError("a (T, T) causal mask was built")
    with monkeypatch.context() as m:
        m.setattr(ab, "causal_mask", refuse)
        out, _ = attention_forward("full", q, k, v, is_causal=True)
    torch.testing.assert_close(out, ref)
    out, w = attention_forward("full", q, k, v, is_causal=True, need_weights=True)
    torch.testing.assert_close(out, ref)
    assert w.shape == (2, 4, 24, 24) and not w.triu(1).any()
