"""Linformer attention: identity projections at k = T are full attention, general projections
match the formula written out here, padding content never matters, encoders train and round
trip, and a decoder with it is refused."""

import io
import math

import pytest
import torch

from lmforge.blocks import AttentionOptions, attention_forward
from lmforge.blocks.attention_linformer import LinformerSettings, make_linformer_state
from lmforge.errors import ConfigError
from lmforge.models import ModelConfig, build_model


def qkv(B=2, H=2, T=10, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, H, T, D, generator=g, dtype=torch.float64) for _ in range(3))


def run(q, k, v, state, settings, padding=None):
    mask = None if padding is None else padding[:, None, None, :]
    out, _ = attention_forward("linformer", q, k, v, mask=mask,
                               options=AttentionOptions(settings=settings, state=state))
    return out


def full_attention(q, k, v):
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), -1) @ v


def test_identity_projection_at_full_length_is_full_attention():
    q, k, v = qkv()
    s = LinformerSettings(projected_length=10)
    state = make_linformer_state(s, 2, 8, 10).double()
    with torch.no_grad():
        state.proj_k.copy_(torch.eye(10))
        state.proj_v.copy_(torch.eye(10))
    torch.testing.assert_close(run(q, k, v, state, s), full_attention(q, k, v))


@pytest.mark.parametrize("share_kv", [False, True])
def test_matches_the_formula_with_padding_and_shorter_input(share_kv):
    q, k, v = qkv(T=7)
    s = LinformerSettings(projected_length=4, share_kv=share_kv)
    torch.manual_seed(0)
    state = make_linformer_state(s, 2, 8, 12).double()  # context 12, input 7
    real = torch.ones(2, 7, dtype=torch.bool)
    real[1, 5:] = False
    E = state.proj_k[:, :7]
    Fm = E if share_kv else state.proj_v[:, :7]
    keep = real[:, None, :, None].double()
    kp = torch.einsum("nt,bhtd->bhnd", E, k * keep)
    vp = torch.einsum("nt,bhtd->bhnd", Fm, v * keep)
    torch.testing.assert_close(run(q, k, v, state, s, real), full_attention(q, kp, vp))
    assert (state.proj_v is None) == share_kv


def test_padding_content_changes_nothing():
    q, k, v = qkv(T=9)
    s = LinformerSettings(projected_length=5)
    state = make_linformer_state(s, 2, 8, 9).double()
    real = torch.tensor([[True] * 6 + [False] * 3] * 2)
    a = run(q, k, v, state, s, real)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 6:], v2[:, :, 6:] = 100.0, -50.0
    torch.testing.assert_close(run(q, k2, v2, state, s, real), a)


def test_too_long_input_is_refused():
    q, k, v = qkv(T=9)
    s = LinformerSettings(projected_length=4)
    with pytest.raises(ValueError, match="context_length = 8"):
        run(q, k, v, make_linformer_state(s, 2, 8, 8).double(), s)


def encoder(**options):
    torch.manual_seed(0)
    return build_model(ModelConfig(arch="encoder", vocab_size=40, context_length=16, d_model=16,
                                   n_layer=2, n_head=2, attention="linformer",
                                   attention_options=options or None))


def test_encoder_trains_and_round_trips():
    model = encoder(projected_length=6)
    x = torch.randint(0, 40, (2, 12))
    real = torch.ones(2, 12, dtype=torch.bool)
    real[0, 9:] = False
    model(x, padding_mask=real).mlm_logits.square().mean().backward()
    sd = model.state_dict()
    keys = [key for key in sd if ".backend_state.proj_" in key]
    assert len(keys) == 4 and sd[keys[0]].shape == (6, 16)
    for name, p in model.named_parameters():
        if ".backend_state." in name:
            assert p.grad is not None and p.grad[:, :12].abs().sum() > 0
            assert torch.all(p.grad[:, 12:] == 0)  # positions beyond the input: unused
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    torch.manual_seed(1)
    other = build_model(model.cfg)
    other.load_state_dict(torch.load(buf, weights_only=True))
    model.eval(), other.eval()
    torch.testing.assert_close(other(x, padding_mask=real).mlm_logits,
                               model(x, padding_mask=real).mlm_logits)


def test_decoder_is_refused_and_options_checked():
    with pytest.raises(ConfigError, match=r"model\.attention: attention 'linformer' has no "
                                          r"causal form"):
        ModelConfig(vocab_size=10, attention="linformer")
    with pytest.raises(ConfigError, match=r"attention_options\.projected_length: must be"):
        ModelConfig(arch="encoder", vocab_size=10, attention="linformer",
                    attention_options={"projected_length": 0})
