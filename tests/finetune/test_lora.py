import copy
import json

import pytest
import torch
import torch.nn.functional as F
from ft_helpers import tiny_model
from torch import nn

from lmforge.errors import CheckpointError, ConfigError
from lmforge.finetune import (ALL_LINEAR, LoRAConfig, base_fingerprint, inject_lora,
                              load_adapter, lora_layers, lora_state_dict, merge_lora,
                              read_adapter_config, save_adapter, set_lora_enabled)


def randomise_b(model, std=0.05, seed=3):
    """Give every adapter a non-zero update (as after some training)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * std)


def test_zero_b_leaves_outputs_unchanged(model, tokens):
    ref = model(tokens)
    big = torch.randint(0, 97, (4, 40))  # B*T >= 128: the base model takes the fused q/k/v GEMM
    ref_big = model(big)
    report = inject_lora(model, LoRAConfig(rank=4, targets=ALL_LINEAR))
    assert len(report.layers) == 2 * 7  # q k v o gate up down, two blocks
    assert torch.equal(model(tokens), ref)  # base + exactly 0
    torch.testing.assert_close(model(big), ref_big, rtol=0, atol=1e-5)


def test_defaults_and_report(model):
    cfg = LoRAConfig()
    assert (cfg.rank, cfg.alpha, cfg.dropout) == (8, 16.0, 0.0)
    assert cfg.targets == ["*.attn.q_proj", "*.attn.v_proj"]
    total = model.num_params()
    report = inject_lora(model, cfg)
    assert report.layers == [f"backbone.layers.{i}.attn.{p}_proj" for i in (0, 1) for p in "qv"]
    assert report.trainable_params == 4 * 8 * (64 + 64)
    assert report.total_params == total + report.trainable_params
    assert report.trainable_share == pytest.approx(report.trainable_params / report.total_params)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{layer}.lora_{x}" for layer in report.layers for x in "AB"}
    assert "trainable" in str(report)


def test_only_adapters_receive_gradients(model, tokens):
    inject_lora(model, LoRAConfig(rank=4, targets=ALL_LINEAR))
    randomise_b(model)  # with B = 0 the gradient of A is exactly 0
    model.train()
    F.cross_entropy(model(tokens).flatten(0, 1), tokens.flatten()).backward()
    for name, p in model.named_parameters():
        if ".lora_" in name:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_merge_matches_and_unmerge_is_bit_exact(model, tokens):
    inject_lora(model, LoRAConfig(rank=4, alpha=8, targets=ALL_LINEAR))
    randomise_b(model)
    before = {n: m.base.weight.detach().clone() for n, m in lora_layers(model).items()}
    out = model(tokens)
    for m in lora_layers(model).values():
        m.merge()
    merged = model(tokens)
    torch.testing.assert_close(merged, out, rtol=0, atol=1e-5)
    assert (merged - out).abs().max() > 0  # the weights really changed
    for m in lora_layers(model).values():
        m.unmerge()
    for n, m in lora_layers(model).items():
        assert torch.equal(m.base.weight, before[n]), n  # bit for bit
    assert torch.equal(model(tokens), out)


def test_unmerge_without_original_refused(model):
    inject_lora(model)
    layer = next(iter(lora_layers(model).values()))
    layer.merge(keep_original=False)
    with pytest.raises(ConfigError, match="dropped the original"):
        layer.unmerge()


def test_merge_lora_gives_plain_linears(model, tokens):
    keys = set(model.state_dict())
    inject_lora(model, LoRAConfig(rank=4, targets=ALL_LINEAR))
    randomise_b(model)
    out = model(tokens)
    merge_lora(model)
    assert not lora_layers(model)
    assert all(type(m.attn.q_proj) is nn.Linear for m in model.backbone.layers)
    assert set(model.state_dict()) == keys  # an ordinary model directory again
    torch.testing.assert_close(model(tokens), out, rtol=0, atol=1e-5)


def test_merge_lora_reuses_the_base_weights(model, tokens):
    """Merging folds each update into the base weight's own storage: merging a whole model
    (the QLoRA run's final merge into the float base) needs no second copy of its linears.
    Merged layers equal base + (alpha / r) B A computed by hand."""
    inject_lora(model, LoRAConfig(rank=4, alpha=8, targets=ALL_LINEAR))
    randomise_b(model)
    layers = lora_layers(model)
    storage = {n: m.base.weight.data_ptr() for n, m in layers.items()}
    expect = {n: m.base.weight.detach().double() + (m.lora_B.double() @ m.lora_A.double()) * 2.0
              for n, m in layers.items()}
    merge_lora(model)
    for n in layers:
        w = model.get_submodule(n).weight
        assert w.data_ptr() == storage[n], n  # the same tensor, updated in place
        assert not w.requires_grad
        torch.testing.assert_close(w.double(), expect[n], rtol=0, atol=1e-6)


def test_disable_adapters(model, tokens):
    ref = model(tokens)
    inject_lora(model)
    randomise_b(model)
    assert not torch.allclose(model(tokens), ref)
    set_lora_enabled(model, False)
    assert torch.equal(model(tokens), ref)


def test_save_load_round_trip(model, tokens, tmp_path):
    base = copy.deepcopy(model)
    inject_lora(model, LoRAConfig(rank=4, alpha=4, targets=ALL_LINEAR))
    randomise_b(model)
    out = model(tokens)
    path = save_adapter(model, tmp_path / "adapter")
    config = read_adapter_config(path)
    assert config["rank"] == 4 and config["alpha"] == 4.0
    assert config["base_fingerprint"] == base_fingerprint(base)
    assert config["targets"] == list(ALL_LINEAR)
    size = sum(f.stat().st_size for f in path.iterdir())
    assert size < 0.2 * 4 * base.num_params()  # far smaller than the model
    report = load_adapter(base, path)
    assert report.layers == list(lora_layers(model))
    assert torch.equal(base(tokens), out)
    sd = lora_state_dict(base)
    assert all(torch.equal(sd[k], v) for k, v in lora_state_dict(model).items())


def test_load_onto_model_with_adapters(model, tokens, tmp_path):
    other = copy.deepcopy(model)
    inject_lora(model, LoRAConfig(rank=4))
    randomise_b(model)
    save_adapter(model, tmp_path)
    inject_lora(other, LoRAConfig(rank=4))
    load_adapter(other, tmp_path)
    assert torch.equal(other(tokens), model(tokens))


def test_fingerprint_mismatch_is_a_clear_error(model, tmp_path):
    inject_lora(model)
    save_adapter(model, tmp_path)
    other = tiny_model(seed=1)  # same architecture, other weights
    want, have = base_fingerprint(model), base_fingerprint(other)
    assert want != have
    with pytest.raises(CheckpointError) as e:
        load_adapter(other, tmp_path)
    assert want in str(e.value) and have in str(e.value)
    load_adapter(other, tmp_path, check_base=False)  # the shapes fit: allowed on request


def test_fingerprint_ignores_adapters_and_dtype(model):
    fp = base_fingerprint(model)
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    assert base_fingerprint(bf16) == fp
    inject_lora(model, LoRAConfig(targets=ALL_LINEAR))
    assert base_fingerprint(model) == fp
    assert base_fingerprint(tiny_model(n_layer=3)) != fp


def test_pattern_matching_nothing_lists_layers(model):
    with pytest.raises(ConfigError) as e:
        inject_lora(model, LoRAConfig(targets=("*.attn.q_proj", "*.attention.query")))
    msg = str(e.value)
    assert "'*.attention.query'" in msg
    for name in ("backbone.layers.*.attn.q_proj", "backbone.layers.*.ff.gate_proj", "lm_head"):
        assert name in msg


def test_regex_patterns(model):
    report = inject_lora(model, LoRAConfig(targets=(r"re:backbone\.layers\.0\.attn\.[qk]_proj",)))
    assert report.layers == ["backbone.layers.0.attn.q_proj", "backbone.layers.0.attn.k_proj"]
    with pytest.raises(ConfigError, match="regular expression"):
        inject_lora(tiny_model(), LoRAConfig(targets=("re:(",)))


def test_rank_larger_than_layer_refused(model):
    with pytest.raises(ConfigError, match=r"min\(in, out\) = 64 of backbone.layers.0.attn.q_proj"):
        inject_lora(model, LoRAConfig(rank=65))
    assert not lora_layers(model)  # nothing half-done


def test_bad_config_values():
    for kw in ({"rank": 0}, {"alpha": 0}, {"dropout": 1.0}, {"targets": ()}):
        with pytest.raises(ConfigError):
            LoRAConfig(**kw)


def test_tied_head_and_double_injection_refused(model):
    with pytest.raises(ConfigError, match="tied"):
        inject_lora(model, LoRAConfig(targets=("lm_head",)))
    inject_lora(model)
    with pytest.raises(ConfigError, match="already has LoRA"):
        inject_lora(model)


def test_dropout_only_in_training(model, tokens):
    inject_lora(model, LoRAConfig(dropout=0.5))
    randomise_b(model, std=1.0)
    model.eval()
    assert torch.equal(model(tokens), model(tokens))
    model.train()
    torch.manual_seed(0)
    assert not torch.equal(model(tokens), model(tokens))


def test_adapter_config_is_small_json(model, tmp_path):
    inject_lora(model)
    save_adapter(model, tmp_path, "f" * 16, LoRAConfig())
    data = json.loads((tmp_path / "adapter_config.json").read_text())
    assert data["base_fingerprint"] == "f" * 16 and data["format"] == "lmforge-lora"
    with pytest.raises(CheckpointError, match="missing"):
        load_adapter(model, tmp_path / "nope")


def test_trainer_updates_only_adapters(model, tmp_path):
    from lmforge.objectives.causal_lm import causal_lm_loss
    from lmforge.training.config import TrainConfig
    from lmforge.training.trainer import Trainer

    inject_lora(model, LoRAConfig(rank=4, alpha=8, targets=ALL_LINEAR))
    frozen = {k: v.clone() for k, v in model.state_dict().items() if ".lora_" not in k}
    g = torch.Generator().manual_seed(0)
    seq = torch.randint(0, 97, (4, 17), generator=g)
    batch = (seq[:, :-1], seq[:, 1:])
    cfg = TrainConfig(max_steps=15, batch_size=4, lr=1e-2, min_lr=1e-2, warmup_steps=0,
                      eval_every=1000, checkpoint_every=0, log_every=10, dtype="float32",
                      device="cpu", progress=False)
    model.train()
    with torch.no_grad():
        first = float(causal_lm_loss(model, batch))
    result = Trainer(model, causal_lm_loss, lambda s, m, r: batch, cfg, tmp_path).fit()
    assert result.train_loss < first - 0.5
    for k, v in model.state_dict().items():
        if k in frozen:
            assert torch.equal(v, frozen[k]), k
