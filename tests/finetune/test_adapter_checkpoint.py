"""Checkpoints of LoRA / QLoRA runs hold only the trainable tensors (AdapterTrainer), resume
exactly, and refuse a different base; ``modules_to_save`` trains and saves whole modules (a
classifier head) next to the adapters."""

import torch
import torch.nn.functional as F
from ft_helpers import tiny_model
from safetensors.torch import load_file

import pytest
from lmforge.errors import CheckpointError, ConfigError
from lmforge.finetune import (ALL_LINEAR, LoRAConfig, base_fingerprint, inject_lora,
                              load_adapter, lora_report, merged_copy, quantize_nf4, save_adapter,
                              saved_modules)
from lmforge.finetune.checkpoint import (AdapterTrainer, frozen_fingerprint, trainable_names,
                                         trainable_state_dict)
from lmforge.training import Trainer
from lmforge.training.checkpoint import list_checkpoints, load_checkpoint
from lmforge.training.config import TrainConfig


def lm_loss(model, batch):
    logits = model(batch[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())


def batches(step, micro=0, rank=0):
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randint(0, 97, (4, 17), generator=g)


def cfg(**kw):
    base = dict(max_steps=12, batch_size=4, lr=1e-2, warmup_steps=2, eval_every=100,
                checkpoint_every=4, log_every=4, dtype="float32", progress=False, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def adapted(method="lora", seed=0):
    model = tiny_model(seed).train()
    if method == "qlora":
        quantize_nf4(model)
    inject_lora(model, LoRAConfig(rank=4, targets=ALL_LINEAR, dropout=0.1))
    return model


def test_checkpoints_hold_only_the_trainable_tensors(tmp_path):
    model = adapted()
    AdapterTrainer(model, lm_loss, batches, cfg(max_steps=4), tmp_path / "a").fit()
    state = load_checkpoint(list_checkpoints(tmp_path / "a" / "checkpoints")[-1])
    assert state["model_scope"] == "trainable"
    assert sorted(state["model"]) == sorted(trainable_names(model))
    assert all(k.endswith((".lora_A", ".lora_B")) for k in state["model"])
    assert state["frozen_fingerprint"] == frozen_fingerprint(model)
    # the same run with the plain Trainer writes the whole model: several times larger
    Trainer(adapted(), lm_loss, batches, cfg(max_steps=4), tmp_path / "b").fit()
    small = list_checkpoints(tmp_path / "a" / "checkpoints")[-1].stat().st_size
    whole = list_checkpoints(tmp_path / "b" / "checkpoints")[-1].stat().st_size
    assert small < whole / 3  # measured: 171 KB vs 633 KB (adapters are 8% of this tiny model)


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_killed_and_resumed_run_equals_the_uninterrupted_one(tmp_path, method):
    full = adapted(method)
    AdapterTrainer(full, lm_loss, batches, cfg(), tmp_path / "full").fit()
    part = adapted(method)
    AdapterTrainer(part, lm_loss, batches, cfg(), tmp_path / "part").fit(stop_at=6)  # ckpt at 4
    torch.manual_seed(999)  # a new process: the RNG (dropout) comes from the checkpoint
    again = adapted(method)  # the base is rebuilt; adapters start fresh (other A)
    r = AdapterTrainer(again, lm_loss, batches, cfg(), tmp_path / "part").fit(resume=True)
    assert r.step == 12
    a, b = trainable_state_dict(full), trainable_state_dict(again)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_another_base_or_other_adapters(tmp_path):
    AdapterTrainer(adapted(seed=0), lm_loss, batches, cfg(), tmp_path / "r").fit(stop_at=4)
    with pytest.raises(CheckpointError, match="frozen base weights differ"):
        AdapterTrainer(adapted(seed=1), lm_loss, batches, cfg(), tmp_path / "r").fit(resume=True)
    other = tiny_model(0).train()
    inject_lora(other, LoRAConfig(rank=4))  # q, v only
    with pytest.raises(CheckpointError, match="trainable tensors do not match"):
        AdapterTrainer(other, lm_loss, batches, cfg(), tmp_path / "r").fit(resume=True)


def test_a_whole_model_checkpoint_still_resumes(tmp_path):
    Trainer(adapted(), lm_loss, batches, cfg(), tmp_path / "w").fit(stop_at=4)
    r = AdapterTrainer(adapted(), lm_loss, batches, cfg(), tmp_path / "w").fit(resume=True)
    assert r.step == 12


# -- modules_to_save -----------------------------------------------------------------------

def classifier(seed=0):
    from lmforge.models import ModelConfig, build_model

    torch.manual_seed(seed)
    return build_model(ModelConfig(arch="encoder", vocab_size=60, d_model=32, n_layer=2, n_head=2,
                                   context_length=16, heads="classifier", n_classes=3,
                                   classifier_pooling="mean"))


def test_modules_to_save_train_fully_and_travel_with_the_adapter(tmp_path):
    model = classifier()
    report = inject_lora(model, LoRAConfig(rank=2, modules_to_save=("head",)))
    assert saved_modules(model) == ("head",)
    trainable = trainable_names(model)
    assert sorted(n for n in trainable if not n.startswith("head.")) == sorted(
        f"encoder.backbone.layers.{i}.attn.{p}_proj.lora_{m}" for i in (0, 1) for p in "qv"
        for m in "AB")
    assert {"head.proj.weight", "head.proj.bias"} <= set(trainable)
    assert report.trainable_params == 4 * 2 * (32 + 32) + 32 * 3 + 3 == lora_report(model).trainable_params
    x = torch.randint(0, 60, (2, 9))
    model(x).sum().backward()
    got_grad = sorted(n for n, p in model.named_parameters() if p.grad is not None)
    assert got_grad == sorted(trainable)  # nothing else receives a gradient
    with torch.no_grad():  # "train"
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    save_adapter(model, tmp_path / "ad")
    tensors = load_file(tmp_path / "ad" / "adapter_model.safetensors")
    assert {"head.proj.weight", "head.proj.bias"} <= set(tensors)
    model.eval()
    fresh = classifier().eval()  # the same base, with another (untrained) head
    assert base_fingerprint(fresh, exclude=["head"]) == base_fingerprint(model)
    load_adapter(fresh, tmp_path / "ad")
    torch.testing.assert_close(fresh(x), model(x))
    merged = merged_copy(model).eval()
    torch.testing.assert_close(merged(x), model(x), atol=1e-5, rtol=1e-5)
    assert not saved_modules(merged) and saved_modules(model) == ("head",)  # model unchanged


def test_modules_to_save_errors():
    with pytest.raises(ConfigError, match="'nohead' match no module"):
        inject_lora(classifier(), LoRAConfig(rank=2, modules_to_save=("nohead",)))
    with pytest.raises(ConfigError, match="adapted or trained fully"):
        inject_lora(classifier(), LoRAConfig(rank=2, targets=("head.proj",),
                                             modules_to_save=("head",)))
    tied = tiny_model()  # tied embeddings: the output head shares the token embedding
    with pytest.raises(ConfigError, match="tied"):
        inject_lora(tied, LoRAConfig(rank=2, modules_to_save=("lm_head",)))
