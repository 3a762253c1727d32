"""Gradient accumulation weighted by target tokens equals one large batch."""

import torch

from lmforge.models import build_model
from lmforge.models.config import ModelConfig
from lmforge.objectives import causal_lm_loss
from lmforge.training.accumulate import micro_weights, target_count
from lmforge.training.config import TrainConfig
from lmforge.training.distributed import DistInfo
from lmforge.training.trainer import Trainer


def _batches():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 40, (6, 13), generator=g)
    y = x[:, 1:].clone()
    y[:3, :9] = -100  # the first rows (the first micro-batch) have far fewer targets
    return x[:, :-1], y


def test_target_count_of_each_batch_kind():
    x, y = _batches()
    assert target_count((x, y)) == int((y != -100).sum()) == 6 * 12 - 27
    assert target_count({"tgt_out": y}) == 45
    labels = torch.tensor([[-100, 5, 6, -100], [1, 2, -100, -100]])
    assert target_count({"input_ids": labels.clamp(min=0), "labels": labels}) == 3  # shifted
    assert target_count({"input_ids": x, "labels": torch.zeros(6, dtype=torch.long)}) is None
    assert target_count({"input_ids": x}) is None
    weights, report = micro_weights([(x[:3], y[:3]), (x[3:], y[3:])], DistInfo(), torch.device("cpu"))
    assert weights == [9 / 45, 36 / 45] and report == weights


def _grads_after_one_step(grad_accum: int, tmp_path) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=40, d_model=16, n_layer=1, n_head=2,
                                    context_length=12))
    x, y = _batches()
    rows = 6 // grad_accum

    def batch(step, micro, rank):
        return x[micro * rows:(micro + 1) * rows], y[micro * rows:(micro + 1) * rows]

    cfg = TrainConfig(max_steps=1, batch_size=rows, grad_accum=grad_accum, grad_clip=0.0,
                      warmup_steps=0, dtype="float32", device="cpu", progress=False)
    trainer = Trainer(model, causal_lm_loss, batch, cfg, tmp_path / str(grad_accum))
    seen = []
    step = trainer.optimizer.step
    trainer.optimizer.step = lambda *a, **k: (seen.extend(p.grad.clone() for p in
                                                          model.parameters()), step(*a, **k))[1]
    trainer._train_step(None)
    return seen


def test_uneven_micro_batches_give_the_large_batch_gradient(tmp_path):
    whole = _grads_after_one_step(1, tmp_path)
    accumulated = _grads_after_one_step(2, tmp_path)
    for a, b in zip(whole, accumulated):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    # the old rule (the mean of the two micro-batch means) is measurably different here
    x, y = _batches()
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=40, d_model=16, n_layer=1, n_head=2,
                                    context_length=12))
    ((causal_lm_loss(model, (x[:3], y[:3])) + causal_lm_loss(model, (x[3:], y[3:]))) / 2).backward()
    naive = [p.grad for p in model.parameters()]
    assert max(float((a - b).abs().max()) for a, b in zip(whole, naive)) > 1e-3
