"""Performer (FAVOR+) attention: exactly the linear-attention formula with its features
(written out here), approaching softmax attention as the features grow, no future leakage,
padding invariance, feature redrawing, KV-cache decoding, models through ModelConfig."""

import io
import itertools
import math

import pytest
import torch

from lmforge.blocks import AttentionOptions, attention_forward
from lmforge.blocks.attention_performer import (
    PerformerSettings,
    PerformerState,
    orthogonal_features,
)
from lmforge.errors import ConfigError
from lmforge.models import ModelConfig, build_model


def qkv(B=2, H=2, T=12, D=8, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, H, T, D, generator=g) * sc for sc in (scale, scale, 1.0))


def run(q, k, v, settings, causal=False, padding=None, state=None, seed=0):
    if state is None:
        torch.manual_seed(seed)
        state = PerformerState(settings, q.shape[-1])
    mask = None if padding is None else padding[:, None, None, :]
    out, _ = attention_forward("performer", q, k, v, mask=mask, is_causal=causal,
                               options=AttentionOptions(settings=settings, state=state))
    return out, state


def softmax_reference(q, k, v, causal=False):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:
        T = q.shape[2]
        s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), -math.inf)
    return torch.softmax(s, -1) @ v


def favor_reference(q, k, v, w, causal=False, real=None):
    """The FAVOR+ estimate by its definition: phi(x) = exp(w·x' - |x'|²/2) / sqrt(m),
    x' = x / d^(1/4); weights phi(q_i)·phi(k_j) normalised over the visible keys."""
    d = q.shape[-1]
    phi = lambda x: torch.exp((x / d ** 0.25) @ w.T - (x / d ** 0.25).square().sum(-1, True) / 2)
    a = (phi(q.double()) @ phi(k.double()).transpose(-2, -1)) / w.shape[0]  # (B, H, Tq, Tk)
    if causal:
        a = a * torch.ones(q.shape[2], k.shape[2], dtype=a.dtype).tril()
    if real is not None:
        a = a * real[:, None, None, :]
    return (a / a.sum(-1, keepdim=True) @ v.double()).float()


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_equals_the_favor_formula(causal, chunk):
    q, k, v = qkv(T=13)
    real = torch.ones(2, 13, dtype=torch.bool)
    real[0, 10:] = False
    s = PerformerSettings(num_features=32, chunk_length=chunk)
    out, state = run(q, k, v, s, causal, real)
    ref = favor_reference(q, k, v, state.features.double(), causal, real)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_error_falls_as_features_grow(causal):
    """Mean |performer - softmax attention| over 4 draws, measured at 16/64/256/1024 features:
    0.119, 0.094, 0.063, 0.038 (non-causal), 0.139, 0.101, 0.069, 0.042 (causal); 4096 gives
    0.021 / 0.023 (not run: slow)."""
    q, k, v = qkv(B=1, H=2, T=32, D=16, scale=0.7)
    ref = softmax_reference(q, k, v, causal)
    errors = []
    for m in (16, 64, 256, 1024):
        err = [(run(q, k, v, PerformerSettings(num_features=m), causal, seed=sd)[0] - ref)
               .abs().mean().item() for sd in range(4)]
        errors.append(sum(err) / len(err))
    assert all(b < 0.85 * a for a, b in itertools.pairwise(errors)), errors
    assert errors[-1] < 0.05, errors


def test_causal_never_reads_the_future():
    q, k, v = (t.requires_grad_() for t in qkv(B=1, T=16))
    out, _ = run(q, k, v, PerformerSettings(num_features=16, chunk_length=5), causal=True)
    for i in (0, 4, 5, 11):
        grads = torch.autograd.grad(out[:, :, i].sum(), (q, k, v), retain_graph=True)
        for g in grads:
            assert torch.all(g[:, :, i + 1:] == 0)
        assert grads[1][:, :, :i].abs().sum() > 0 or i == 0
        assert grads[2][:, :, :i + 1].abs().sum() > 0


@pytest.mark.parametrize("causal", [False, True])
def test_padding_changes_nothing_real(causal):
    q, k, v = qkv(B=1, T=10)
    s = PerformerSettings(num_features=32, chunk_length=4)
    short, state = run(q, k, v, s, causal)
    noise = [torch.cat([torch.randn(1, 2, 3, 8) * 9, t], 2) for t in (q, k, v)]  # left pads
    real = torch.tensor([[False] * 3 + [True] * 10])
    padded, _ = run(*noise, s, causal, real, state=state)
    torch.testing.assert_close(padded[:, :, 3:], short, atol=1e-5, rtol=1e-5)


def test_features_redraw_every_interval_in_training_only():
    torch.manual_seed(0)
    state = PerformerState(PerformerSettings(num_features=8, redraw_interval=2), 4)
    w0 = state.features.clone()
    w = orthogonal_features(8, 4)
    gram = (w[:4] / w[:4].norm(dim=1, keepdim=True)) @ (w[:4] / w[:4].norm(dim=1, keepdim=True)).T
    torch.testing.assert_close(gram, torch.eye(4), atol=1e-5, rtol=0)  # orthogonal block
    state.eval()
    for _ in range(3):
        state.step()
    assert torch.equal(state.features, w0)
    state.train()
    state.step(), state.step()
    assert torch.equal(state.features, w0)  # calls 0 and 1 use the first draw
    state.step()
    assert not torch.equal(state.features, w0) and int(state.calls) == 3
    never = PerformerState(PerformerSettings(num_features=8, redraw_interval=0), 4)
    first = never.features.clone()
    for _ in range(5):
        never.step()
    assert torch.equal(never.features, first)


def tiny(arch="decoder", **options):
    torch.manual_seed(0)
    return build_model(ModelConfig(arch=arch, vocab_size=40, context_length=32, d_model=16,
                                   n_layer=2, n_head=2, positional="rope", attention="performer",
                                   attention_options=options or None))


def test_kv_cache_decoding_equals_full_forward():
    model = tiny(num_features=32, chunk_length=4).eval()
    x = torch.randint(0, 40, (2, 13))
    full = model(x)
    cache = model.new_cache(2)
    parts = [model(x[:, :6], cache=cache)] + [model(x[:, t:t + 1], cache=cache)
                                               for t in range(6, 13)]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["decoder", "encoder"])
def test_model_trains_and_round_trips(arch):
    model = tiny(arch, num_features=16)
    x = torch.randint(0, 40, (2, 16))
    out = model(x)
    (out if arch == "decoder" else out.mlm_logits).square().mean().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "attn" in n)
    sd = model.state_dict()
    keys = [key for key in sd if key.endswith("backend_state.features")]
    assert len(keys) == 2 and sd[keys[0]].shape == (16, 8)
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    torch.manual_seed(1)
    other = build_model(model.cfg)
    other.load_state_dict(torch.load(buf, weights_only=True))
    model.eval(), other.eval()
    a, b = model(x), other(x)
    torch.testing.assert_close(a if arch == "decoder" else a.mlm_logits,
                               b if arch == "decoder" else b.mlm_logits)


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"attention_options\.num_features: must be"):
        ModelConfig(vocab_size=10, attention="performer", attention_options={"num_features": 0})
    with pytest.raises(ConfigError, match=r"attention_options\.redraw_interval"):
        ModelConfig(vocab_size=10, attention="performer",
                    attention_options={"redraw_interval": -1})
    with pytest.raises(ConfigError, match="unknown config key"):
        ModelConfig(vocab_size=10, attention="performer", attention_options={"features": 8})
