"""The attention-backend registry: every backend against a reference written out here, what
``auto`` picks, the sliding window (naive loop mask, no leakage, KV-cache decoding past the
window), a backend registered by a test and used through the config, and the config errors."""

import math

import re

import pytest
import torch

from lmforge.blocks import ATTENTION_BACKENDS, AttentionOptions, MultiHeadAttention, alibi_bias
from lmforge.blocks import alibi_slopes, attention_forward, register_attention
from lmforge.blocks import attention_backends as ab
from lmforge.config import from_dict
from lmforge.errors import ConfigError
from lmforge.models import ModelConfig, build_model

BACKENDS = ("explicit", "fused", "auto", "sliding_window")


def loop_mask(q_len: int, k_len: int, window: int = 0, causal: bool = True) -> torch.Tensor:
    """allowed[i][j] by the definition: query i sits at position k_len - q_len + i; it sees key
    j if j is not after it and, with a window, i - j < window (Mistral).  # (Tq, Tk)"""
    off = k_len - q_len
    rows = [[(not causal or j <= off + i) and (window == 0 or off + i - j < window)
             for j in range(k_len)] for i in range(q_len)]
    return torch.tensor(rows, dtype=torch.bool)


def reference(q, k, v, allowed=None, bias=None):
    """softmax(Q Kᵀ / sqrt(d) + bias) V per (batch, head); key/value head h * Hkv // H serves
    query head h. ``allowed`` (B or 1, Tq, Tk); an all-False row attends to everything."""
    B, H, Tq, D = q.shape
    out = torch.empty_like(q)
    for b in range(B):
        for h in range(H):
            kh = h * k.shape[1] // H
            s = q[b, h] @ k[b, kh].T / math.sqrt(D)  # (Tq, Tk)
            if bias is not None:
                s = s + bias[h]
            if allowed is not None:
                a = allowed[b % allowed.shape[0]]
                a = a | ~a.any(-1, keepdim=True)
                s = s.masked_fill(~a, -math.inf)
            out[b, h] = torch.softmax(s, -1) @ v[b, kh]
    return out


def qkv(B=2, H=4, Hkv=4, Tq=6, Tk=6, D=8, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, H, Tq, D, generator=g, dtype=dtype),
            torch.randn(B, Hkv, Tk, D, generator=g, dtype=dtype),
            torch.randn(B, Hkv, Tk, D, generator=g, dtype=dtype))


def run(backend, q, k, v, window=0, **kw):
    """sliding_window needs a window: one covering every key is full causal attention."""
    if backend == "sliding_window" and window == 0:
        window = k.shape[2]
    return attention_forward(backend, q, k, v, options=AttentionOptions(window=window), **kw)


def test_registry_has_the_builtin_backends():
    assert set(BACKENDS) <= set(ATTENTION_BACKENDS)
    assert ATTENTION_BACKENDS["explicit"].returns_weights
    assert ATTENTION_BACKENDS["fused"].native_gqa and ATTENTION_BACKENDS["fused"].native_causal


CASES = {
    "causal": dict(),
    "padding": dict(pad=True),
    "alibi": dict(alibi=True),
    "gqa": dict(Hkv=2),
    "mqa-padding-alibi": dict(Hkv=1, pad=True, alibi=True),
    "cache-offset": dict(Tq=3, Tk=7),
    "one-query-many-rows": dict(B=8, Tq=1, Tk=7),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES)
def test_backend_equals_reference(backend, case):
    c = dict(CASES[case])
    pad, alibi = c.pop("pad", False), c.pop("alibi", False)
    q, k, v = qkv(**c)
    B, H, Tq, _ = q.shape
    Tk = k.shape[2]
    allowed = loop_mask(Tq, Tk)[None]  # (1, Tq, Tk)
    mask = bias = None
    if pad:  # left padding in row 1
        keep = torch.ones(B, Tk, dtype=torch.bool)
        keep[1, :2] = False
        mask, allowed = keep[:, None, None, :], allowed & keep[:, None, :]
    if alibi:
        bias = alibi_bias(alibi_slopes(H).double(), torch.arange(Tk - Tq, Tk), torch.arange(Tk))
    y, w = run(backend, q, k, v, mask=mask, bias=bias, is_causal=True)
    ref = reference(q, k, v, allowed, bias)
    real = slice(None) if not pad else slice(2, None)  # padded query rows are ignored
    torch.testing.assert_close(y[:, :, real], ref[:, :, real])
    assert torch.isfinite(y).all() and w is None  # weights only when asked for


@pytest.mark.parametrize("backend", ("explicit", "fused", "auto"))
def test_bidirectional_with_padding(backend):
    q, k, v = qkv(Hkv=2)
    keep = torch.tensor([[1] * 6, [1] * 4 + [0] * 2], dtype=torch.bool)  # right padding
    y, _ = run(backend, q, k, v, mask=keep[:, None, None, :])
    ref = reference(q, k, v, keep[:, None, :].expand(2, 6, 6))
    torch.testing.assert_close(y, ref)


def test_auto_rules():
    pick = ab.auto_choice
    assert pick("cpu", torch.bfloat16, True, 64, 8) == "explicit"  # bf16 CPU training
    assert pick("cpu", torch.float16, True, 64, 8) == "explicit"
    assert pick("cpu", torch.bfloat16, False, 64, 8) == "fused"  # bf16 CPU inference
    assert pick("cpu", torch.float32, True, 64, 8) == "fused"
    assert pick("cpu", torch.float32, False, 1, 32) == "explicit"  # batched decoding
    assert pick("cpu", torch.float32, False, 1, 31) == "fused"  # one row: even
    assert pick("cpu", torch.float32, False, 2, 64) == "fused"
    assert pick("cuda", torch.bfloat16, True, 64, 8) == "fused"  # the rules are CPU-only
    assert pick("cuda", torch.float32, False, 1, 64) == "fused"


def _spy(monkeypatch, name: str) -> list:
    """Replace backend ``name`` by a recording wrapper; returns the list of its calls."""
    calls, entry = [], ATTENTION_BACKENDS[name]

    def spy(q, k, v, **kw):
        calls.append(q.shape)
        return entry.fn(q, k, v, **kw)
    monkeypatch.setitem(ATTENTION_BACKENDS, name, ab.AttentionBackend(
        name, spy, entry.native_gqa, entry.native_causal, entry.returns_weights))
    return calls


def test_auto_routes_as_documented_and_fused_never_switches(monkeypatch):
    explicit, fused = _spy(monkeypatch, "explicit"), _spy(monkeypatch, "fused")
    q, k, v = (t.bfloat16() for t in qkv(Hkv=2))
    attention_forward("auto", q, k, v, is_causal=True)  # grad enabled: training
    assert (len(explicit), len(fused)) == (1, 0)
    with torch.no_grad():
        attention_forward("auto", q, k, v, is_causal=True)
    assert (len(explicit), len(fused)) == (1, 1)
    attention_forward("fused", q, k, v, is_causal=True)  # what was asked, bf16 training or not
    q1, k1, v1 = qkv(B=8, Tq=1, Tk=5)  # 8 x 4 rows of one query
    with torch.no_grad():
        attention_forward("fused", q1, k1, v1, is_causal=True)
        assert (len(explicit), len(fused)) == (1, 3)
        attention_forward("auto", q1, k1, v1, is_causal=True)
    assert (len(explicit), len(fused)) == (2, 3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("Tq,Tk,window", [(9, 9, 3), (9, 9, 1), (4, 11, 3), (1, 11, 4),
                                          (2, 5, 8)])
def test_sliding_window_equals_loop_mask(backend, Tq, Tk, window):
    q, k, v = qkv(Hkv=2, Tq=Tq, Tk=Tk)
    allowed = loop_mask(Tq, Tk, window)
    assert torch.equal(ab.causal_mask(Tq, Tk, window=window), allowed)
    y, _ = run(backend, q, k, v, window=window, is_causal=True)
    torch.testing.assert_close(y, reference(q, k, v, allowed[None]))


def test_mistral_window_convention():
    """transformers' sliding_window_overlay: key j visible from query i iff j > i - window."""
    m = loop_mask(6, 6, window=3)
    assert m[5].int().tolist() == [0, 0, 0, 1, 1, 1]  # 3 positions, the query's own included


@pytest.mark.parametrize("backend", BACKENDS)
def test_weights_requested_keep_the_window(backend):
    q, k, v = qkv(Hkv=2, Tq=3, Tk=10)
    y, _ = run(backend, q, k, v, window=4, is_causal=True)
    yw, w = run(backend, q, k, v, window=4, is_causal=True, need_weights=True)
    torch.testing.assert_close(yw, y)
    assert w.shape == (2, 4, 3, 10)
    assert torch.equal(w != 0, loop_mask(3, 10, 4).expand_as(w))
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, 3, dtype=w.dtype))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("window", [0, 3])
def test_no_future_leakage(backend, window):
    """d out[t] / d (k, v)[s] is zero for s > t, and with a window for s <= t - window."""
    q, k, v = (t.requires_grad_() for t in qkv(B=1, Hkv=2, Tq=7, Tk=7))
    if backend == "sliding_window" and window == 0:
        return
    y, _ = run(backend, q, k, v, window=window, is_causal=True)
    for t in range(7):
        gk, gv = torch.autograd.grad(y[:, :, t].sum(), (k, v), retain_graph=True)
        seen = (gk.abs().sum((0, 1, 3)) + gv.abs().sum((0, 1, 3))) != 0  # (Tk,)
        assert seen.tolist() == loop_mask(7, 7, window)[t].tolist(), f"query {t}"


@pytest.mark.parametrize("attention", ["sliding_window", "auto", "explicit"])
def test_kv_cache_decoding_past_the_window_equals_full_forward(attention):
    cfg = ModelConfig(vocab_size=50, context_length=64, d_model=32, n_layer=2, n_head=4,
                      n_kv_head=2, positional="rope", norm="rmsnorm", activation="swiglu",
                      bias=False, attention=attention, attention_window=4)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    idx = torch.randint(0, 50, (2, 20))
    with torch.no_grad():
        full = model(idx)  # (B, T, V)
        cache = model.new_cache(2, max_len=20)
        steps = [model(idx[:, :5], cache=cache)]  # prompt, then a chunk, then one at a time
        steps.append(model(idx[:, 5:8], cache=cache))
        steps += [model(idx[:, t:t + 1], cache=cache) for t in range(8, 20)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    # the window matters: the same weights without it agree up to the window, then differ
    plain = build_model(ModelConfig(**{**vars(cfg), "attention": "fused",
                                       "attention_window": 0})).eval()
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        other = plain(idx)
    torch.testing.assert_close(other[:, :4], full[:, :4], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(other[:, 4:], full[:, 4:], atol=1e-3)


def test_multihead_attention_window_no_leakage():
    torch.manual_seed(0)
    attn = MultiHeadAttention(16, 4, 2, backend="sliding_window",
                              options=AttentionOptions(window=2)).double()
    x = torch.randn(1, 6, 16, dtype=torch.float64, requires_grad=True)
    y = attn(x, is_causal=True)
    (g,) = torch.autograd.grad(y[0, 4].sum(), x)
    assert (g[0].abs().sum(-1) != 0).tolist() == [False, False, False, True, True, False]


@pytest.fixture
def toy(monkeypatch):
    """A backend registered the way a plugin would: one function and its decorator line."""
    calls = []
    monkeypatch.setattr(ab, "ATTENTION_BACKENDS", dict(ATTENTION_BACKENDS))

    @register_attention("toy")
    def toy_attention(q, k, v, *, mask, bias, dropout_p, need_weights, options):
        calls.append(k.shape)  # keys arrive repeated to H heads, mask complete
        s = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, H, Tq, Tk)
        s = s if mask is None else s.masked_fill(~mask, -math.inf)
        return torch.softmax(s, -1) @ v, None
    return calls


def test_registered_backend_is_usable_from_the_config(toy):
    kw = dict(vocab_size=40, context_length=16, d_model=32, n_layer=2, n_head=4, n_kv_head=2)
    torch.manual_seed(0)
    ours = build_model(ModelConfig(attention="toy", **kw)).eval()
    ref = build_model(ModelConfig(attention="explicit", **kw)).eval()
    ref.load_state_dict(ours.state_dict())
    idx = torch.randint(0, 40, (2, 9))
    pad = torch.ones(2, 9, dtype=torch.bool)
    pad[1, 6:] = False
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), ref(idx))
        torch.testing.assert_close(ours(idx, padding_mask=pad)[pad],
                                   ref(idx, padding_mask=pad)[pad])
    assert len(toy) == 4 and toy[0] == (2, 4, 9, 8)  # 2 layers x 2 calls; GQA repeated for it


def test_unknown_backend_suggests_a_name():
    with pytest.raises(ConfigError, match=r"model\.attention: .*did you mean 'fused'"):
        ModelConfig(attention="fusd")
    with pytest.raises(ConfigError, match="did you mean 'sliding_window'"):
        ModelConfig(attention="sliding-window")
    every = ", ".join(sorted(ATTENTION_BACKENDS))
    assert {"auto", "explicit", "fused", "sliding_window", "longformer", "bigbird", "lsh",
            "performer", "linformer", "sparse_strided", "sparse_fixed", "full"} <= set(ATTENTION_BACKENDS)
    with pytest.raises(ConfigError, match="registered: " + re.escape(every)):
        ModelConfig(attention="flash")
    with pytest.raises(ConfigError, match="did you mean 'explicit'"):
        MultiHeadAttention(16, 4, backend="explict")
    with pytest.raises(ConfigError, match="unknown attention backend"):
        attention_forward("nope", *qkv())


def test_window_validation_and_old_configs():
    with pytest.raises(ConfigError, match=r"model\.attention_window: .*sliding_window"):
        ModelConfig(attention="sliding_window")
    with pytest.raises(ConfigError, match=r"model\.attention_window: must be an integer from 0"):
        ModelConfig(attention_window=-1)
    with pytest.raises(ConfigError, match=r"model\.attention_window: .*decoders, encoders"):
        ModelConfig(arch="vit", attention_window=4)
    assert ModelConfig().attention == "auto" and ModelConfig().attention_window == 0
    for old in ("fused", "explicit"):  # config.json of model directories saved before
        cfg = from_dict(ModelConfig, {"attention": old, "vocab_size": 10, "d_model": 32,
                                      "n_head": 4, "n_layer": 1})
        assert build_model(cfg).backbone.layers[0].attn.backend == old


@pytest.mark.parametrize("attention", ["sliding_window", "fused"])
def test_an_encoder_window_reaches_both_ways(attention):
    """An encoder with ``attention_window = 3``: the output at position t depends on exactly
    the inputs t-2 .. t+2 (gradients), with the blocked backend and as a mask on another one;
    a seq2seq model with a window runs its encoder that way and its decoder causally."""
    torch.manual_seed(0)
    cfg = ModelConfig(arch="encoder", vocab_size=40, context_length=32, d_model=16, n_layer=1,
                      n_head=2, attention=attention, attention_window=3)
    model = build_model(cfg).double()
    x = torch.randn(1, 20, 16, dtype=torch.float64, requires_grad=True)
    attn = model.encoder.backbone.layers[0].attn
    (g,) = torch.autograd.grad(attn(x, is_causal=False)[0, 10].sum(), x)
    assert (g[0].abs().sum(-1) != 0).nonzero().flatten().tolist() == [8, 9, 10, 11, 12]
    s2s = build_model(ModelConfig(arch="seq2seq", vocab_size=40, context_length=32, d_model=16,
                                  n_layer=1, n_head=2, attention=attention, attention_window=3))
    out = s2s(torch.randint(0, 40, (2, 12)), torch.randint(0, 40, (2, 9)))
    assert out.shape[:2] == (2, 9) and torch.isfinite(out).all()
