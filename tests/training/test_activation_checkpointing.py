"""train.activation_checkpointing: the same gradients, with and without it, for full models and
LoRA; stored activations shrink."""

import copy

import pytest
import torch

from lmforge.errors import ConfigError
from lmforge.finetune.lora import LoRAConfig, inject_lora
from lmforge.models import build_model
from lmforge.models.config import ModelConfig
from lmforge.objectives import causal_lm_loss
from lmforge.training.parallel import apply_activation_checkpointing


def _model(dropout: float = 0.0):
    torch.manual_seed(0)
    return build_model(ModelConfig(vocab_size=64, d_model=32, n_layer=3, n_head=4,
                                   context_length=24, dropout=dropout))


def _grads(model, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 64, (3, 25), generator=g)
    model.train()
    torch.manual_seed(seed)  # the same dropout masks (checkpointing replays the RNG)
    causal_lm_loss(model, (x[:, :-1], x[:, 1:])).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("mode", ["blocks", "selective"])
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_identical_gradients(mode, dropout):
    plain = _model(dropout)
    checked = copy.deepcopy(plain)
    assert apply_activation_checkpointing(checked, mode) == 3
    a, b = _grads(plain), _grads(checked)
    assert a.keys() == b.keys() and a
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_identical_gradients_under_lora():
    plain = _model()
    inject_lora(plain, LoRAConfig(rank=4, targets=["*.q_proj", "*.v_proj"]))
    for n, p in plain.named_parameters():
        if n.endswith("lora_B"):
            torch.nn.init.normal_(p, std=0.1)
    checked = copy.deepcopy(plain)
    apply_activation_checkpointing(checked, "blocks")
    a, b = _grads(plain), _grads(checked)
    assert any("lora" in n for n in a)
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_deep_copy_keeps_its_own_forward():
    model = _model()
    apply_activation_checkpointing(model, "blocks")
    twin = copy.deepcopy(model)
    assert twin.backbone.layers[0].forward.module is twin.backbone.layers[0]


def test_fewer_saved_activations():
    def saved_bytes(model) -> int:
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t
        x = torch.randint(0, 64, (2, 24))
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            causal_lm_loss(model, (x, x))
        return total
    plain = _model()
    full = saved_bytes(plain)
    checked = copy.deepcopy(plain)
    apply_activation_checkpointing(checked, "blocks")
    assert saved_bytes(checked) < 0.6 * full


def test_a_model_without_blocks_is_refused():
    with pytest.raises(ConfigError, match="activation_checkpointing"):
        apply_activation_checkpointing(torch.nn.Linear(2, 2), "blocks")
