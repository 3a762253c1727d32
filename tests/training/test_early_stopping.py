"""Early stopping in the Trainer: a custom evaluation's metrics are logged, the best one is
reported through on_best, patience ends training, and a resumed run continues the count."""

import json

import pytest
import torch
from torch import nn

from lmforge.errors import ConfigError
from lmforge.training import EarlyStopping, Trainer, TrainConfig

# dev accuracy at steps 2, 4, 6, ... : best at step 4, then no improvement
SCRIPT = {2: 0.5, 4: 0.8, 6: 0.7, 8: 0.8, 10: 0.75, 12: 0.9, 14: 0.95}


def test_early_stopping_unit():
    es = EarlyStopping("accuracy", "max", patience=2)
    assert es.update(1, {"accuracy": 0.5}) and es.best_step == 1
    assert not es.update(2, {"accuracy": 0.5}) and not es.should_stop  # ties do not improve
    assert not es.update(3, {"accuracy": 0.4}) and es.should_stop
    low = EarlyStopping("loss", "min", patience=0, min_delta=0.1)
    assert low.update(1, {"loss": 1.0}) and not low.update(2, {"loss": 0.95})
    assert low.update(3, {"loss": 0.8}) and not low.should_stop  # patience 0: never stops
    again = EarlyStopping("loss", "min")
    again.load_state_dict(low.state_dict())
    assert (again.best, again.best_step, again.bad_evals) == (0.8, 3, 0)
    with pytest.raises(ConfigError, match="reports only loss"):
        es.update(4, {"loss": 1.0})
    with pytest.raises(ConfigError):
        EarlyStopping(mode="up")


def make(tmp_path, patience=2):
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    tc = TrainConfig(max_steps=14, batch_size=4, lr=1e-2, warmup_steps=0, eval_every=2,
                     checkpoint_every=2, progress=False, dtype="float32")
    best_calls = []
    holder = {}

    def evaluate(m):
        return {"loss": 1.0 - SCRIPT[holder["t"].step], "accuracy": SCRIPT[holder["t"].step]}

    def batch(step, micro, rank):
        g = torch.Generator().manual_seed(step)
        return torch.randn(4, 4, generator=g)

    t = Trainer(model, lambda m, x: m(x).pow(2).mean(), batch, tc, tmp_path,
                evaluate_fn=evaluate, early_stopping=EarlyStopping("accuracy", "max", patience),
                on_best=lambda m, s: best_calls.append((s["step"], s["eval"]["accuracy"])))
    holder["t"] = t
    return t, best_calls


def test_trainer_stops_when_patience_runs_out(tmp_path):
    t, best_calls = make(tmp_path)
    r = t.fit()
    assert r.stopped_early and r.step == 8  # no improvement at 6 and 8
    assert best_calls == [(2, 0.5), (4, 0.8)]
    assert t.early_stopping.best == 0.8 and t.early_stopping.best_step == 4
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if r["split"] == "val"]
    assert [v["accuracy"] for v in val] == [0.5, 0.8, 0.7, 0.8]
    assert r.val_loss == pytest.approx(0.2)
    assert (tmp_path / "checkpoints" / "step_0000008.pt").is_file()


def test_patience_zero_runs_to_the_end_and_tracks_the_best(tmp_path):
    t, best_calls = make(tmp_path, patience=0)
    r = t.fit()
    assert not r.stopped_early and r.step == 14
    assert [s for s, _ in best_calls] == [2, 4, 12, 14]


def test_resume_continues_the_patience_count(tmp_path):
    t, _ = make(tmp_path)
    t.fit(stop_at=6)  # killed after the evaluation at step 6 (one bad evaluation)
    t2, best_calls = make(tmp_path)
    r = t2.fit(resume=True)
    assert r.stopped_early and r.step == 8 and best_calls == []
    assert t2.early_stopping.best_step == 4
