"""train.compile: the compiled model trains to the same losses as the eager one; a compiler
that is missing here gives one line and uncompiled training."""

import pytest
import torch

from lmforge.models import build_model
from lmforge.models.config import ModelConfig
from lmforge.objectives import causal_lm_loss
from lmforge.training import parallel
from lmforge.training.config import TrainConfig
from lmforge.training.trainer import Trainer


def _losses(compile_: bool, tmp_path) -> tuple[list[float], Trainer]:
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=32, d_model=16, n_layer=1, n_head=2,
                                    context_length=8))

    def batch(step, micro, rank):
        g = torch.Generator().manual_seed(step)
        x = torch.randint(0, 32, (4, 9), generator=g)
        return x[:, :-1], x[:, 1:]

    cfg = TrainConfig(max_steps=3, batch_size=4, warmup_steps=0, dtype="float32", device="cpu",
                      progress=False, compile=compile_, eval_every=0)
    trainer = Trainer(model, causal_lm_loss, batch, cfg, tmp_path / str(compile_))
    return [trainer._train_step(None) for _ in range(3)], trainer


@pytest.mark.slow
def test_compiled_training_gives_the_same_losses(tmp_path, capsys):
    eager, _ = _losses(False, tmp_path)
    compiled, trainer = _losses(True, tmp_path)
    if trainer.train_model is trainer.model:
        pytest.skip("torch.compile is unavailable here: " + capsys.readouterr().err.strip())
    assert compiled == pytest.approx(eager, rel=1e-4, abs=1e-5)


def test_missing_compiler_falls_back_with_one_line(tmp_path, capsys, monkeypatch):
    def broken(model, **kw):
        def run(*a, **k):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")
        return run
    monkeypatch.setattr(parallel.torch, "compile", broken)
    losses, trainer = _losses(True, tmp_path)
    assert trainer.train_model is trainer.model  # uncompiled
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.compile" in err[0] and "C++ compiler" in err[0]
    assert losses == _losses(False, tmp_path)[0]
