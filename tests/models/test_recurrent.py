"""rnn/lstm/gru baselines: the wrappers against torch.nn.LSTM/GRU/RNN called directly on the
same weights (row by row, unpadded), padding invariance, the LM against its formula, and an
LSTM and a Transformer learning a tiny copy task beyond chance."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmforge.models import CausalLM, ModelConfig, build_model
from lmforge.models.recurrent import RecurrentClassifier, RecurrentLM


def cfg(arch, **kw):
    base = dict(arch=arch, vocab_size=20, d_model=8, n_layer=2, n_head=2, context_length=32)
    return ModelConfig(**{**base, **kw})


def batch(lengths, T=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    T = T or max(lengths)
    idx = torch.randint(1, 20, (len(lengths), T), generator=g)
    mask = torch.arange(T)[None] < torch.tensor(lengths)[:, None]
    return idx.masked_fill(~mask, 0), mask


@pytest.mark.parametrize("arch,ref_cls", [("lstm", nn.LSTM), ("gru", nn.GRU), ("rnn", nn.RNN)])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_classifier_features_match_torch_layers_row_by_row(arch, ref_cls, bidirectional):
    torch.manual_seed(0)
    m = build_model(cfg(arch, heads="classifier", n_classes=3, bidirectional=bidirectional)).eval()
    assert isinstance(m, RecurrentClassifier)
    ref = ref_cls(8, 8, num_layers=2, batch_first=True, bidirectional=bidirectional)
    ref.load_state_dict(m.encoder.rnn.state_dict())
    idx, mask = batch([5, 2, 7])
    feats = m.features(idx, None, mask)  # (B, dirs*C)
    for b, n in enumerate(mask.sum(1).tolist()):
        _, h = ref(m.encoder.embed(idx[b:b + 1, :n]))  # the row alone, no padding
        h = h[0] if isinstance(h, tuple) else h  # (layers*dirs, 1, C)
        want = torch.cat(list(h[-(2 if bidirectional else 1):, 0]), -1)
        torch.testing.assert_close(feats[b], want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("arch", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("pooling", ["cls", "mean", "max"])
def test_padding_never_changes_the_logits(arch, pooling):
    torch.manual_seed(0)
    m = build_model(cfg(arch, heads="classifier", n_classes=2, bidirectional=True,
                        classifier_pooling=pooling)).eval()
    idx, mask = batch([6, 3], T=6)
    wide_idx = torch.cat([idx, torch.full((2, 5), 7)], 1)  # more padding, garbage ids in it
    wide_mask = torch.cat([mask, torch.zeros(2, 5, dtype=torch.bool)], 1)
    torch.testing.assert_close(m(idx, None, mask), m(wide_idx, None, wide_mask))
    torch.testing.assert_close(m(idx[1:, :3], None, mask[1:, :3]), m(idx, None, mask)[1:])


def test_lm_is_embedding_rnn_and_tied_head():
    torch.manual_seed(0)
    m = build_model(cfg("gru"))
    assert isinstance(m, RecurrentLM) and m.tied_keys() == {"lm_head.weight"}
    idx, _ = batch([6, 6])
    ref = nn.GRU(8, 8, num_layers=2, batch_first=True)
    ref.load_state_dict(m.rnn.state_dict())
    out, _ = ref(F.embedding(idx, m.embed.weight))
    torch.testing.assert_close(m(idx), out @ m.embed.weight.T)
    # step by step with the returned state = all at once
    logits, state = m(idx[:, :4], return_state=True)
    torch.testing.assert_close(m(idx[:, 4:], state=state), m(idx)[:, 4:], atol=1e-6, rtol=1e-5)


def copy_batch(g, B=32, n=3):
    x = torch.randint(2, 12, (B, n), generator=g)
    seq = torch.cat([x, torch.ones(B, 1, dtype=torch.long), x], 1)  # digits | digits
    return seq[:, :-1], seq[:, 1:]


@pytest.mark.parametrize("arch", ["lstm", "decoder"])
def test_lstm_and_transformer_learn_to_copy(arch):
    torch.manual_seed(0)
    c = cfg(arch, vocab_size=12, d_model=64, n_layer=1, n_head=4)
    model = build_model(c)
    assert isinstance(model, RecurrentLM if arch == "lstm" else CausalLM)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2 if arch == "lstm" else 3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        x, y = copy_batch(g)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = copy_batch(torch.Generator().manual_seed(1), B=256)
    with torch.no_grad():
        pred = model.eval()(x).argmax(-1)[:, 3:]  # the copied half
    acc = (pred == y[:, 3:]).float().mean().item()
    assert acc > 0.6, acc  # chance is 0.1


@pytest.mark.parametrize("arch", ["rnn", "lstm", "gru"])
def test_width_not_constrained_by_n_head_without_attention(arch):
    """rnn/lstm/gru have no heads: d_model 64 with a decoder preset's n_head 6 builds (the
    check still refuses it for an attention model)."""
    from lmforge.errors import ConfigError

    m = build_model(ModelConfig(arch=arch, vocab_size=11, d_model=64, n_head=6, n_layer=1))
    ref = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[arch]
    assert isinstance(m.rnn, ref) and m.rnn.hidden_size == 64
    with pytest.raises(ConfigError, match="n_head"):
        ModelConfig(arch="decoder", vocab_size=11, d_model=64, n_head=6, n_layer=1)
