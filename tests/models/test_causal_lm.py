import pytest
import torch

from lmforge.models import ModelConfig, build_model

VARIANTS = [
    dict(positional="learned"),
    dict(positional="sinusoidal", prenorm=False),
    dict(positional="rope", norm="rmsnorm", activation="swiglu", bias=False, n_kv_head=2,
         tie_embeddings=False),
    dict(positional="alibi", n_kv_head=1),
    dict(positional="none", attention="explicit"),
]


def tiny(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=50, d_model=32, n_layer=2, n_head=4, context_length=24, **kw)
    return build_model(cfg).eval()


@pytest.mark.parametrize("kw", VARIANTS, ids=lambda kw: kw["positional"])
def test_future_tokens_never_change_earlier_logits(kw):
    model = tiny(**kw)
    x = torch.randint(0, 50, (2, 16))
    y = x.clone()
    y[:, 10:] = torch.randint(0, 50, (2, 6))
    a, b = model(x), model(y)
    torch.testing.assert_close(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


@pytest.mark.parametrize("kw", VARIANTS, ids=lambda kw: kw["positional"])
def test_kv_cache_decoding_equals_full_forward(kw):
    model = tiny(**kw)
    x = torch.randint(0, 50, (2, 20))
    full = model(x)
    cache = model.new_cache(2)
    parts = [model(x[:, :7], cache=cache)]
    for t in range(7, 20):
        parts.append(model(x[:, t:t + 1], cache=cache))
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == 20


def test_padding_tokens_change_no_real_output():
    model = tiny(positional="rope")
    x = torch.randint(1, 50, (1, 8))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), x], dim=1)  # left padding
    mask = torch.tensor([[False] * 3 + [True] * 8])
    positions = torch.arange(11)[None] - 3
    out = model(padded, padding_mask=mask, positions=positions.clamp(min=0))
    torch.testing.assert_close(out[:, 3:], model(x), atol=1e-5, rtol=1e-5)


def test_weight_tying_and_param_count():
    tied = tiny()
    assert tied.lm_head.weight is tied.backbone.embed.weight
    untied = tiny(tie_embeddings=False)
    assert untied.num_params() - tied.num_params() == 50 * 32


def test_grouped_query_shrinks_kv_projections():
    assert tiny(n_kv_head=1).num_params() < tiny(n_kv_head=2).num_params() < tiny().num_params()


def test_attention_weights_can_be_collected():
    model = tiny()
    maps: list = []
    model(torch.randint(0, 50, (1, 9)), attn_out=maps)
    assert len(maps) == 2 and maps[0].shape == (1, 4, 9, 9)
    torch.testing.assert_close(maps[1].sum(-1), torch.ones(1, 4, 9))


def test_config_errors_name_the_field():
    from lmforge.errors import ConfigError

    with pytest.raises(ConfigError, match="model.n_head"):
        ModelConfig(d_model=30, n_head=4)
    with pytest.raises(ConfigError, match="model.n_kv_head"):
        ModelConfig(n_head=6, n_kv_head=4)
