"""1-D signal classifiers (lmforge.models.signal): the CNN against an explicit torch.nn
reference with copied weights, the GRU classifier against the GRU equations written out and
against torch.nn.GRU (both directions), the patch embedding against a loop over patches, the
sinusoidal positions against the table, the config checks, and a tiny model learning a tiny
signal task."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmforge.blocks.positions import sinusoidal_table
from lmforge.errors import ConfigError
from lmforge.models import ModelConfig, build_model, model_kind
from lmforge.models.signal import PatchEmbedding1d, SignalCNN, SignalRNN, SignalTransformer


def cfg(arch, length=40, channels=1, **kw):
    base = dict(d_model=8, n_layer=2, n_head=2, vocab_size=0)
    return ModelConfig(arch=arch, heads="classifier", n_classes=3, signal_length=length,
                       image_channels=channels, **{**base, **kw})


def test_arch_picks_the_signal_model():
    assert isinstance(build_model(cfg("image_cnn")), SignalCNN)
    assert isinstance(build_model(cfg("vit", patch_size=4)), SignalTransformer)
    for arch in ("rnn", "lstm", "gru"):
        assert isinstance(build_model(cfg(arch)), SignalRNN) and model_kind(cfg(arch)) == "signal_rnn"


def test_cnn_matches_explicit_reference():
    torch.manual_seed(0)
    c = cfg("image_cnn", length=40, channels=2, d_model=25, n_layer=3, n_head=5)
    model = build_model(c).eval()
    ref = nn.Sequential(nn.Conv1d(2, 25, 5, 2, 1), nn.ReLU(), nn.Conv1d(25, 25, 5, 2, 1), nn.ReLU(),
                        nn.Conv1d(25, 25, 5, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(25 * 4, 3))
    for i, conv in enumerate(model.convs):
        ref[2 * i].load_state_dict(conv.state_dict())
    ref[-1].load_state_dict(model.head.proj.state_dict())
    x = torch.randn(5, 2, 40)
    torch.testing.assert_close(model(x), ref(x))
    assert model.num_params() == sum(p.numel() for p in ref.parameters())


def gru_by_hand(x, w_ih, w_hh, b_ih, b_hh):  # x (B, T, D) -> final state (B, H)
    """The GRU equations (PyTorch's gate order r, z, n), one time step at a time."""
    h = x.new_zeros(x.shape[0], w_hh.shape[1])
    for t in range(x.shape[1]):
        gi, gh = x[:, t] @ w_ih.T + b_ih, h @ w_hh.T + b_hh
        (ir, iz, i_n), (hr, hz, hn) = gi.chunk(3, -1), gh.chunk(3, -1)
        r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
        n = torch.tanh(i_n + r * hn)
        h = (1 - z) * n + z * h
    return h


def test_gru_classifier_matches_the_equations_and_torch_gru():
    torch.manual_seed(0)
    model = build_model(cfg("gru", length=7, channels=3, n_layer=1)).eval()
    x = torch.randn(4, 3, 7)  # (B, C, L)
    steps = x.transpose(1, 2) @ model.proj.weight.T + model.proj.bias  # (B, L, D)
    r = model.rnn
    h = gru_by_hand(steps, r.weight_ih_l0, r.weight_hh_l0, r.bias_ih_l0, r.bias_hh_l0)
    torch.testing.assert_close(model(x), model.head.proj(h))
    # bidirectional, two layers: against torch.nn.GRU with the same weights
    model = build_model(cfg("gru", length=7, channels=3, bidirectional=True)).eval()
    ref = nn.GRU(8, 8, num_layers=2, batch_first=True, bidirectional=True)
    ref.load_state_dict(model.rnn.state_dict())
    _, hn = ref(x.transpose(1, 2) @ model.proj.weight.T + model.proj.bias)  # (4, B, D)
    torch.testing.assert_close(model(x), model.head.proj(torch.cat([hn[2], hn[3]], -1)))


def test_patch_embedding_matches_a_loop_over_patches():
    torch.manual_seed(0)
    emb = PatchEmbedding1d(2, 4, 6)
    x = torch.randn(3, 2, 20)
    w = emb.proj.weight.reshape(6, 2 * 4)  # (D, C*P)
    ref = torch.stack([x[:, :, i * 4:(i + 1) * 4].reshape(3, -1) @ w.T + emb.proj.bias
                       for i in range(5)], 1)  # (B, N, D)
    torch.testing.assert_close(emb(x), ref)


def test_transformer_tokens_and_positions():
    torch.manual_seed(0)
    m = build_model(cfg("vit", length=12, patch_size=3, positional="sinusoidal")).eval()
    x = torch.randn(2, 1, 12)
    want = torch.cat([m.cls.expand(2, 1, 8), m.patch_embed(x) + sinusoidal_table(4, 8)], 1)
    torch.testing.assert_close(m.tokens(x), want)
    # no positions + mean pooling: reordering the patches leaves the logits unchanged
    m = build_model(cfg("vit", length=12, patch_size=3, positional="none",
                        classifier_pooling="mean")).eval()
    perm = torch.cat([x[..., 6:9], x[..., 0:3], x[..., 9:12], x[..., 3:6]], -1)
    torch.testing.assert_close(m(x), m(perm))
    m = build_model(cfg("vit", length=12, patch_size=3, positional="rope", conv_widths=[3]))
    assert m(x).shape == (2, 3) and m.stem[0].kernel_size == (3,)


@pytest.mark.parametrize("kw, field", [
    (dict(arch="encoder"), "signal_length"), (dict(arch="vit", patch_size=7), "patch_size"),
    (dict(arch="image_cnn", n_layer=6), "n_layer"),
    (dict(arch="vit", patch_size=4, conv_widths=[4]), "conv_widths")])
def test_bad_signal_configs_name_the_field(kw, field):
    with pytest.raises(ConfigError, match=f"model.{field}"):
        build_model(cfg(**kw))


def toy(n, gen):  # a bump early (class 0), in the middle (1) or late (2), plus noise
    y = torch.randint(0, 3, (n,), generator=gen)
    t = torch.arange(16.0)
    centre = 3 + 5 * y[:, None] + torch.randint(-1, 2, (n, 1), generator=gen)
    x = torch.exp(-0.5 * (t - centre) ** 2) + 0.3 * torch.randn(n, 16, generator=gen)
    return x[:, None], y  # (N, 1, 16), (N,)


@pytest.mark.parametrize("arch", ["image_cnn", "gru"])
def test_tiny_model_learns_a_tiny_signal_task(arch):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    (x, y), (xt, yt) = toy(256, gen), toy(128, gen)
    model = build_model(cfg(arch, length=16, d_model=12, n_layer=2 if arch == "image_cnn" else 1,
                            n_head=2))
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    for step in range(60):
        idx = torch.randint(0, 256, (32,), generator=gen)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    acc = (model.eval()(xt).argmax(-1) == yt).float().mean().item()
    assert acc > 0.8  # chance is 1/3
