"""The encoder: bidirectional attention from the shared backbone, padding that changes no real
output, BERT embeddings (token types, embedding norm), heads, pooling, model-directory round trip."""

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer, models

from lmforge.errors import ConfigError
from lmforge.modeldir import load_model_dir, save_model_dir
from lmforge.models import (EncoderModel, MaskedLM, ModelConfig, Transformer, build_model, pool)

V = 50


def cfg(**kw) -> ModelConfig:
    base = dict(arch="encoder", vocab_size=V, d_model=32, n_layer=2, n_head=4, context_length=24,
                type_vocab_size=2, embed_norm=True, prenorm=False, norm_eps=1e-12)
    base.update(kw)
    return ModelConfig(**base)


def tiny(**kw) -> MaskedLM:
    torch.manual_seed(0)
    return build_model(cfg(**kw)).eval()


def test_arch_picks_causality_and_model_class():
    assert Transformer(cfg()).causal is False
    assert Transformer(cfg(arch="decoder")).causal is True
    assert isinstance(tiny(), MaskedLM)


@pytest.mark.parametrize("attention", ["fused", "explicit"])
def test_every_token_sees_later_tokens(attention):
    model = tiny(attention=attention)
    x = torch.randint(5, V, (2, 16))
    y = x.clone()
    y[:, 12:] = (y[:, 12:] + 1) % V
    a, b = model.encoder(x), model.encoder(y)
    assert not torch.allclose(a[:, :12], b[:, :12])


@pytest.mark.parametrize("attention", ["fused", "explicit"])
@pytest.mark.parametrize("positional", ["learned", "rope", "alibi"])
def test_padding_tokens_change_no_real_output(attention, positional):
    model = tiny(attention=attention, positional=positional)
    lengths = [11, 6]
    x = torch.randint(5, V, (2, 11))
    types = (torch.arange(11) >= 4).long().expand(2, 11)
    outs = []
    for pad_len, pad_tok in ((16, 0), (20, 7)):  # different amounts and contents of padding
        ids = torch.full((2, pad_len), pad_tok)
        tt = torch.zeros(2, pad_len, dtype=torch.long)
        mask = torch.zeros(2, pad_len, dtype=torch.bool)
        for r, n in enumerate(lengths):
            ids[r, :n], tt[r, :n], mask[r, :n] = x[r, :n], types[r, :n], True
        out = model(ids, tt, mask)
        outs.append((out, mask))
    (a, ma), (b, mb) = outs
    for r, n in enumerate(lengths):
        torch.testing.assert_close(a.hidden[r, :n], b.hidden[r, :n], atol=1e-5, rtol=1e-5)
        # and equal to the row run alone, unpadded
        alone = model.encoder(x[r:r + 1, :n], types[r:r + 1, :n])
        torch.testing.assert_close(a.hidden[r:r + 1, :n], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.pooled, b.pooled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.nsp_logits, b.nsp_logits, atol=1e-5, rtol=1e-5)
    for mode in ("mean", "max", "cls"):
        torch.testing.assert_close(pool(a.hidden, ma, mode), pool(b.hidden, mb, mode),
                                   atol=1e-5, rtol=1e-5)


def test_token_types_and_embedding_norm_are_used():
    model = tiny()
    x = torch.randint(5, V, (1, 10))
    zeros = model.encoder(x)
    assert torch.equal(zeros, model.encoder(x, torch.zeros_like(x)))  # default segment 0
    assert not torch.allclose(zeros, model.encoder(x, torch.ones_like(x)))
    emb = model.encoder.backbone.embed_norm
    assert emb is not None and "encoder.backbone.embed_norm.weight" in model.state_dict()


def test_heads_and_shapes():
    model = tiny()
    x = torch.randint(5, V, (3, 12))
    out = model(x)
    assert out.hidden.shape == (3, 12, 32) and out.pooled.shape == (3, 32)
    assert out.mlm_logits.shape == (3, 12, V) and out.nsp_logits.shape == (3, 2)
    pick = torch.zeros(3, 12, dtype=torch.bool)
    pick[0, 3] = pick[2, 7] = True
    sub = model(x, mlm_positions=pick).mlm_logits  # only the positions asked for
    torch.testing.assert_close(sub, out.mlm_logits[pick])
    assert model.mlm.decoder.weight is model.encoder.backbone.embed.weight
    bare = tiny(heads="none")
    assert bare.mlm is None and bare.nsp is None and bare.tied_keys() == set()
    only_mlm = tiny(heads="mlm", pooler=False)
    o = only_mlm(x)
    assert o.nsp_logits is None and o.pooled is None and o.mlm_logits.shape == (3, 12, V)


def test_pool_modes():
    h = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    torch.testing.assert_close(pool(h, mask, "cls"), h[:, 0])
    torch.testing.assert_close(pool(h, mask, "mean")[0], h[0, :3].mean(0))
    torch.testing.assert_close(pool(h, mask, "max")[0], h[0, :3].amax(0))
    torch.testing.assert_close(pool(h, None, "mean"), h.mean(1))
    with pytest.raises(ConfigError, match="pooling mode"):
        pool(h, mask, "sum")
    with pytest.raises(ConfigError, match="padding_mask"):
        pool(h, mask[:, :3], "mean")


def test_bad_configs_and_inputs_have_clear_errors():
    with pytest.raises(ConfigError, match="pooler"):
        cfg(heads="mlm+nsp", pooler=False)
    with pytest.raises(ConfigError, match="type_vocab_size"):
        cfg(type_vocab_size=-1)
    with pytest.raises(ConfigError, match="arch"):
        EncoderModel(cfg(arch="decoder"))
    model = tiny(type_vocab_size=0)
    x = torch.randint(5, V, (1, 8))
    with pytest.raises(ConfigError, match="token-type"):
        model(x, torch.zeros_like(x))
    with pytest.raises(ConfigError, match="context"):
        model(torch.randint(5, V, (1, 30)))
    with pytest.raises(ConfigError, match="padding_mask"):
        model(x, padding_mask=torch.ones(1, 5, dtype=torch.bool))
    with pytest.raises(ConfigError, match="no pooler"):
        tiny(heads="mlm", pooler=False).encoder.pooled(torch.randn(1, 8, 32))


def test_decoder_configs_are_unchanged():
    d = ModelConfig()
    assert d.arch == "decoder" and d.causal and d.type_vocab_size == 0 and not d.embed_norm
    m = build_model(ModelConfig(vocab_size=V, d_model=32, n_layer=1, n_head=2))
    assert m.backbone.token_type is None and m.backbone.embed_norm is None
    assert m.tied_keys() == {"lm_head.weight"}


@pytest.mark.parametrize("tie", [True, False])
def test_model_directory_round_trip(tmp_path, tie):
    model = tiny(tie_embeddings=tie)
    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(V)}, unk_token="t0"))
    save_model_dir(tmp_path, model, tok, {"task": "test"})
    stored = load_file(str(tmp_path / "model.safetensors"))
    assert ("mlm.decoder.weight" in stored) is (not tie)
    lm = load_model_dir(tmp_path)
    assert isinstance(lm.model, MaskedLM) and lm.config == model.cfg
    assert (lm.model.mlm.decoder.weight is lm.model.encoder.backbone.embed.weight) is tie
    x = torch.randint(5, V, (2, 9))
    a, b = model(x), lm.model(x)
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v)
