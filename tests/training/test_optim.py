"""Learning-rate schedules: warmup, then cosine / linear / constant / inverse square root."""

import math

import pytest

from lmforge.training import lr_at


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant", "inverse_sqrt"])
def test_warmup_is_linear_and_peaks_at_lr(schedule):
    kw = dict(lr=1e-3, min_lr=1e-5, warmup_steps=100, max_steps=1000, schedule=schedule)
    assert lr_at(0, **kw) == pytest.approx(1e-5)
    assert lr_at(49, **kw) == pytest.approx(5e-4)
    assert lr_at(99, **kw) == pytest.approx(1e-3)


def test_decays():
    kw = dict(lr=1e-3, min_lr=1e-5, warmup_steps=100, max_steps=1000)
    assert lr_at(1000, **kw, schedule="cosine") == pytest.approx(1e-5)
    assert lr_at(550, **kw, schedule="linear") == pytest.approx((1e-3 + 1e-5) / 2)
    assert lr_at(700, **kw, schedule="constant") == 1e-3
    # the original Transformer's: lr * sqrt(warmup / step) after warmup, no floor
    assert lr_at(399, **kw, schedule="inverse_sqrt") == pytest.approx(5e-4)
    assert lr_at(9999, **kw, schedule="inverse_sqrt") == pytest.approx(1e-3 * math.sqrt(100 / 10000))


def test_layer_decay_scales_each_depth():
    from lmforge.errors import ConfigError
    from lmforge.models import ModelConfig, build_model
    from lmforge.training import TrainConfig, make_optimizer
    from lmforge.training.optim import layer_depths

    cfg = ModelConfig(arch="encoder", vocab_size=30, d_model=16, n_layer=3, n_head=2,
                      context_length=8, type_vocab_size=2, embed_norm=True, prenorm=False)
    model = build_model(cfg)  # MaskedLM: encoder.backbone.{embed,pos,...,layers.i}, heads
    depths = layer_depths(model)
    assert depths["encoder.backbone.embed.weight"] == 0
    assert depths["encoder.backbone.embed_norm.bias"] == 0
    assert depths["encoder.backbone.layers.0.attn.q_proj.weight"] == 1
    assert depths["encoder.backbone.layers.2.ff.down_proj.bias"] == 3
    assert depths["nsp.classifier.weight"] == depths["encoder.pooler.dense.weight"] == 4
    opt = make_optimizer(model, 1e-3, 0.01, layer_decay=0.5)
    scale = {id(p): (g["lr_scale"], g["weight_decay"]) for g in opt.param_groups
             for p in g["params"]}
    named = dict(model.named_parameters())
    assert scale[id(named["encoder.backbone.embed.weight"])] == (0.5 ** 4, 0.01)
    assert scale[id(named["encoder.backbone.layers.0.norm1.weight"])] == (0.5 ** 3, 0.0)
    assert scale[id(named["encoder.backbone.layers.2.attn.q_proj.weight"])] == (0.5, 0.01)
    assert scale[id(named["nsp.classifier.weight"])] == (1.0, 0.01)
    # every trainable parameter is in exactly one group (tied MLM decoder counted once)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(set(map(id, model.parameters())))
    # without decay: the two groups of old, so existing checkpoints resume
    plain = make_optimizer(model, 1e-3, 0.01)
    assert [g["weight_decay"] for g in plain.param_groups] == [0.01, 0.0]
    assert "lr_scale" not in plain.param_groups[0]
    with pytest.raises(ConfigError, match="layer_decay"):
        TrainConfig(layer_decay=0.0)
