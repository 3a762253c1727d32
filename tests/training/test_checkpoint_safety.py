"""Checkpoints are plain tensors and numbers: they load with ``weights_only=True`` and a file
that would need unpickling (a planted one that runs code, or one of an older lmforge) is
refused with one line; RNG states round-trip exactly; stale temporaries are swept."""

import random

import numpy as np
import pytest
import torch

from lmforge.errors import CheckpointError
from lmforge.files.atomic import TEMP_MARK
from lmforge.training import Trainer, TrainConfig
from lmforge.training.checkpoint import (list_checkpoints, load_checkpoint, rng_state,
                                         save_checkpoint, set_rng_state)

DEAD_PID = 2**30  # above any pid_max: no such process


class PlantedCode:
    """Unpickling this object would call ``open(marker, "w")``: code from the file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def tiny_trainer(out, **cfg) -> Trainer:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    config = TrainConfig(**{"max_steps": 6, "checkpoint_every": 2, "eval_every": 100,
                            "progress": False, "dtype": "float32", "warmup_steps": 0, **cfg})
    return Trainer(model, lambda m, b: m(b).pow(2).mean(),
                   lambda s, mi, r: torch.randn(3, 4), config, out)


def draws() -> tuple:
    return (torch.rand(3).tolist(), np.random.rand(3).tolist(), np.random.normal(size=2).tolist(),
            [random.random() for _ in range(3)], random.gauss(0, 1))


def test_rng_states_are_plain_and_round_trip_exactly(tmp_path):
    np.random.normal()  # leave a cached gaussian in numpy's state
    random.gauss(0, 1)  # and in Python's
    path = save_checkpoint(tmp_path, 1, {"step": 1, "model": {}, "rng": rng_state()})
    expected = draws()
    draws()  # move every generator on
    state = torch.load(path, weights_only=True)  # no pickled objects inside
    set_rng_state(state["rng"])
    assert draws() == expected


def test_checkpoint_that_would_run_code_is_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "PWNED"
    trainer = tiny_trainer(tmp_path / "run")
    planted = trainer.ckpt_dir / "step_0000004.pt"
    planted.parent.mkdir(parents=True)
    torch.save({"step": 4, "model": {}, "rng": PlantedCode(marker)}, planted)
    with pytest.raises(CheckpointError) as err:
        trainer.fit(resume=True)
    message = str(err.value)
    assert "step_0000004.pt" in message and "\n" not in message
    assert "not a plain-tensor lmforge checkpoint; refusing to unpickle it" in message
    assert "it needs io.open" in message or "it needs builtins.open" in message
    assert not marker.exists()
    assert trainer.step == 0 and list_checkpoints(trainer.ckpt_dir) == [planted]


def test_checkpoint_of_the_previous_format_is_refused_with_a_way_on(tmp_path):
    """Before this format the numpy RNG state was a pickled tuple holding an ndarray."""
    old = tmp_path / "step_0000010.pt"
    torch.save({"step": 10, "model": {}, "rng": {"torch": torch.get_rng_state(),
                                                  "numpy": np.random.get_state(),
                                                  "python": random.getstate()}}, old)
    with pytest.raises(CheckpointError, match=r"step_0000010.pt .*refusing to unpickle it "
                       r"\(it needs numpy.*older lmforge cannot be resumed: start again"):
        load_checkpoint(old)


@pytest.mark.parametrize("bad", [
    {"torch": torch.zeros(3)},  # the rest missing
    {"torch": "x", "numpy": {}, "python": {}},
    "not a dict",
    "negative words",  # Python's random state with a word out of range (OverflowError)
])
def test_malformed_rng_state_is_a_checkpoint_error_naming_the_file(tmp_path, bad):
    trainer = tiny_trainer(tmp_path)
    trainer.fit(stop_at=2)
    path = list_checkpoints(trainer.ckpt_dir)[-1]
    state = torch.load(path, weights_only=True)
    if bad == "negative words":
        bad = {**state["rng"], "python": {**state["rng"]["python"],
                                          "words": -torch.ones(625, dtype=torch.int64)}}
    torch.save({**state, "rng": bad}, path)
    with pytest.raises(CheckpointError, match=r"step_0000002.pt.*malformed RNG state"):
        tiny_trainer(tmp_path).fit(resume=True)


def test_checkpoint_of_another_model_is_a_checkpoint_error(tmp_path):
    trainer = tiny_trainer(tmp_path)
    trainer.fit(stop_at=2)
    other = Trainer(torch.nn.Linear(5, 2), lambda m, b: m(b).sum(), lambda s, mi, r: None,
                    trainer.cfg, tmp_path)
    with pytest.raises(CheckpointError, match=r"step_0000002.pt does not fit this run "
                       r"\(RuntimeError: .*size mismatch"):
        other.resume()


def test_resume_sweeps_stale_temporaries_and_continues(tmp_path):
    trainer = tiny_trainer(tmp_path)
    trainer.fit(stop_at=4)
    stale_dir = trainer.ckpt_dir / f".step_0000006.pt{TEMP_MARK}{DEAD_PID}-k2j9x0ab"
    stale_dir.mkdir()
    (stale_dir / "step_0000006.pt").write_bytes(b"\0" * 10_000)  # a killed write's leftovers
    legacy = tmp_path / ".tmpAbC123"  # safetensors' own temporary, left by an older lmforge
    legacy.write_bytes(b"partial")
    resumed = tiny_trainer(tmp_path)
    result = resumed.fit(resume=True)
    assert result.step == 6
    assert not stale_dir.exists() and not legacy.exists()
    assert [p.name for p in list_checkpoints(trainer.ckpt_dir)] == ["step_0000004.pt",
                                                                     "step_0000006.pt"]


def test_eval_every_zero_evaluates_only_at_the_end(tmp_path):
    evals = []
    trainer = tiny_trainer(tmp_path, eval_every=0)
    trainer.evaluate_fn = lambda m: evals.append(1) or {"loss": 1.0}
    trainer.fit()
    assert len(evals) == 1 and trainer.step == 6
