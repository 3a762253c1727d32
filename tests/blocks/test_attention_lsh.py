"""Reformer LSH attention (``attention = "lsh"``): against full attention with one bucket,
against a loop-by-loop reference of the sorted chunks with many buckets, no future leakage,
padding invariance, KV-cache decoding, models through ModelConfig, and its config errors."""

import io
import math

import pytest
import torch
import torch.nn.functional as F

from lmforge.blocks import AttentionOptions, attention_forward
from lmforge.blocks.attention_lsh import LSHSettings, hash_buckets, make_lsh_state
from lmforge.errors import ConfigError
from lmforge.models import ModelConfig, build_model


def qkv(B=2, H=2, T=12, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, H, T, D, generator=g, dtype=torch.float64) for _ in range(3))


def run(q, k, v, settings, causal=False, padding=None, seed=0):
    torch.manual_seed(seed)
    state = make_lsh_state(settings, q.shape[1], q.shape[-1], q.shape[2]).double()
    mask = None if padding is None else padding[:, None, None, :]
    out, _ = attention_forward("lsh", q, k, v, mask=mask, is_causal=causal,
                               options=AttentionOptions(settings=settings, state=state))
    return out, state


def full_reference(q, k, v, causal, shared, real=None):
    """Full softmax attention; shared: queries = k, keys = k normalised to sqrt(D), and self
    only when nothing else is visible (the Reformer rule)."""
    B, _, T, D = q.shape
    if shared:
        q, k = k, F.normalize(k, dim=-1) * math.sqrt(D)
    out = torch.empty_like(q)
    for b in range(B):
        for i in range(T):
            ok = [(real is None or bool(real[b, j])) and (not causal or j <= i) for j in range(T)]
            if shared and any(ok[j] for j in range(T) if j != i):
                ok[i] = False
            ok = torch.tensor(ok)
            s = torch.einsum("hd,htd->ht", q[b, :, i], k[b]) / math.sqrt(D)  # (H, T)
            s = s.masked_fill(~ok, -math.inf)
            out[b, :, i] = torch.einsum("ht,htd->hd", torch.softmax(s, -1), v[b])
    return out


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("causal", [False, True])
def test_one_bucket_one_chunk_is_full_attention(shared, causal):
    q, k, v = qkv()
    real = torch.ones(2, 12, dtype=torch.bool)
    real[1, 9:] = False
    s = LSHSettings(n_buckets=1, n_hashes=3, chunk_length=16, shared_qk=shared)
    out, _ = run(q, k, v, s, causal, real)
    torch.testing.assert_close(out, full_reference(q, k, v, causal, shared, real))


def chunk_reference(q, k, v, s: LSHSettings, rotations, causal):
    """The Reformer by loops: per round, sort by (bucket, position), chunk, attend to own and
    previous chunk (no wrap-around), self only when alone; rounds combined by logsumexp."""
    B, H, T, D = q.shape
    qv, kv = (k, F.normalize(k, dim=-1) * math.sqrt(D)) if s.shared_qk else (q, k)
    qbk = hash_buckets(qv, rotations, s.n_buckets)  # (B, H, R, T)
    kbk = qbk if s.shared_qk else hash_buckets(kv, rotations, s.n_buckets)
    out = torch.zeros_like(q)
    c = min(s.chunk_length, T)
    for b in range(B):
        for h in range(H):
            outs, lses = [], []
            for r in range(s.n_hashes):
                qb, kb = qbk[b, h, r].tolist(), kbk[b, h, r].tolist()
                qorder = sorted(range(T), key=lambda i: (qb[i], i))
                korder = sorted(range(T), key=lambda i: (kb[i], i))
                o, lse = torch.zeros(T, D, dtype=q.dtype), torch.full((T,), -1e30, dtype=q.dtype)
                for p, i in enumerate(qorder):
                    lo = max(0, (p // c - 1) * c)
                    keys = [j for j in korder[lo:(p // c + 1) * c] if not causal or j <= i]
                    if s.shared_qk and len(keys) > 1:
                        keys.remove(i)
                    if not keys:  # nothing visible in this round: output 0, no weight
                        continue
                    sc = torch.stack([qv[b, h, i] @ kv[b, h, j] for j in keys]) / math.sqrt(D)
                    lse[i] = torch.logsumexp(sc, 0)
                    o[i] = torch.softmax(sc, 0) @ v[b, h, keys]
                outs.append(o)
                lses.append(lse)
            w = torch.softmax(torch.stack(lses), 0)  # (R, T)
            out[b, h] = (torch.stack(outs) * w[..., None]).sum(0)
    return out


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("causal", [False, True])
def test_many_buckets_match_the_loop_reference(shared, causal):
    q, k, v = qkv(B=1, T=13)
    s = LSHSettings(n_buckets=4, n_hashes=2, chunk_length=3, shared_qk=shared)
    out, state = run(q, k, v, s, causal)
    ref = chunk_reference(q, k, v, s, state.rotations, causal)
    torch.testing.assert_close(out, ref)
    assert hash_buckets(k, state.rotations, 4).unique().numel() > 1  # really several buckets


@pytest.mark.parametrize("shared", [True, False])
def test_causal_never_reads_the_future(shared):
    q, k, v = (t.requires_grad_() for t in qkv(B=1, T=16))
    s = LSHSettings(n_buckets=4, n_hashes=2, chunk_length=4, shared_qk=shared)
    out, _ = run(q, k, v, s, causal=True)
    for i in (0, 5, 11):
        grads = torch.autograd.grad(out[:, :, i].sum(), (q, k, v), allow_unused=True,
                                    retain_graph=True)
        for g in grads:
            if g is not None:
                assert torch.all(g[:, :, i + 1:] == 0)
    assert torch.autograd.grad(out.sum(), v)[0].abs().sum() > 0


@pytest.mark.parametrize("causal", [False, True])
def test_padding_changes_nothing_real(causal):
    q, k, v = qkv(B=1, T=10)
    s = LSHSettings(n_buckets=4, n_hashes=2, chunk_length=3)
    short, _ = run(q, k, v, s, causal)
    noise = [torch.cat([t, torch.randn(1, 2, 4, 8, dtype=t.dtype) * 5], 2) for t in (q, k, v)]
    real = torch.tensor([[True] * 10 + [False] * 4])
    padded, _ = run(*noise, s, causal, real)
    torch.testing.assert_close(padded[:, :, :10], short)


def tiny(arch="decoder", **options):
    torch.manual_seed(0)
    return build_model(ModelConfig(arch=arch, vocab_size=40, context_length=32, d_model=16,
                                   n_layer=2, n_head=2, positional="rope", attention="lsh",
                                   attention_options=options or None))


def test_kv_cache_decoding_with_one_bucket_equals_full_forward():
    model = tiny(n_buckets=1, chunk_length=32).eval()
    x = torch.randint(0, 40, (2, 12))
    full = model(x)
    cache = model.new_cache(2)
    parts = [model(x[:, :5], cache=cache)] + [model(x[:, t:t + 1], cache=cache)
                                               for t in range(5, 12)]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["decoder", "encoder"])
def test_model_trains_and_round_trips(arch):
    model = tiny(arch, n_buckets=4, chunk_length=4, n_hashes=2)
    x = torch.randint(0, 40, (2, 16))
    out = model(x)
    logits = out if arch == "decoder" else out.mlm_logits
    logits.square().mean().backward()
    backbone = model.backbone if arch == "decoder" else model.encoder.backbone
    assert torch.all(backbone.layers[0].attn.q_proj.weight.grad == 0)  # shared QK: k only
    assert backbone.layers[0].attn.k_proj.weight.grad.abs().sum() > 0
    sd = model.state_dict()
    keys = [key for key in sd if key.endswith("backend_state.rotations")]
    assert len(keys) == 2 and sd[keys[0]].shape == (2, 2, 8, 2)
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    torch.manual_seed(1)
    other = build_model(model.cfg)
    assert not torch.equal(other.state_dict()[keys[0]], sd[keys[0]])
    other.load_state_dict(torch.load(buf, weights_only=True))
    model.eval(), other.eval()
    a, b = model(x), other(x)
    torch.testing.assert_close(a if arch == "decoder" else a.mlm_logits,
                               b if arch == "decoder" else b.mlm_logits)


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"attention_options\.n_buckets: must be 1 or even"):
        ModelConfig(vocab_size=10, attention="lsh", attention_options={"n_buckets": 3})
    with pytest.raises(ConfigError, match=r"attention_options\.chunk_length"):
        ModelConfig(vocab_size=10, attention="lsh", attention_options={"chunk_length": 0})
    model = build_model(ModelConfig(vocab_size=10, d_model=16, n_head=2, n_layer=1,
                                    attention="lsh", positional="alibi"))
    with pytest.raises(ConfigError, match="positional"):
        model(torch.randint(0, 10, (1, 6)))
