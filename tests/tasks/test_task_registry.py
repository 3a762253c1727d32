"""The task registry and the shared driver: a toy task registered here (the one docs/tasks.md
walks through) trains through `lmforge train`, with its own config table, run.toml, --resume
check and meta.json; task names and defaults by architecture."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch

from lmforge.cli.main import main
from lmforge.errors import ConfigError
from lmforge.objectives import causal_lm_loss
from lmforge.tasks import TASKS, RunConfig, Task, TaskData, get_task, register, unregister


@dataclass
class CopyConfig:
    length: int = 6
    """Digits to copy."""


class CopyTask(Task):
    name = "copy"
    summary = "learn to repeat a string of digits"
    section, config = "copy", CopyConfig
    archs = ("decoder",)
    objective = staticmethod(causal_lm_loss)

    def prepare(self, run):
        n, B = run.cfg.copy.length, run.cfg.train.batch_size
        digits = torch.tensor([run.tokenizer.token_to_id(str(d)) for d in range(10)])
        sep = run.tokenizer.token_to_id("|")

        def batch(step, micro, rank):
            g = torch.Generator().manual_seed(hash((run.cfg.seed, step, micro, rank)) % 2**63)
            x = digits[torch.randint(0, 10, (B, n), generator=g)]
            seq = torch.cat([x, torch.full((B, 1), sep), x], 1)
            return seq[:, :-1], seq[:, 1:]

        return TaskData(train_batch=batch, tokens_per_batch=B * 2 * n,
                        eval_batches=lambda: [batch(10**6 + i, 0, 0) for i in range(4)])


@pytest.fixture
def copy_task():
    register(CopyTask())
    yield TASKS["copy"]
    unregister("copy")


def _config(tmp_path, steps=150, length=6):
    (tmp_path / "digits.txt").write_text("0123456789|\n" * 20, encoding="utf-8")
    cfg = tmp_path / "copy.toml"
    cfg.write_text(
        f'task = "copy"\nout_dir = "{tmp_path / "run"}"\n'
        f'[data]\npath = "{tmp_path / "digits.txt"}"\nval_fraction = 0\n'
        '[tokenizer]\nkind = "char"\n'
        "[model]\nd_model = 64\nn_layer = 2\nn_head = 4\ncontext_length = 16\n"
        f"[train]\nmax_steps = {steps}\nbatch_size = 32\nlr = 3e-3\nwarmup_steps = 10\n"
        "eval_every = 50\ncheckpoint_every = 50\nprogress = false\n"
        f"[copy]\nlength = {length}\n", encoding="utf-8")
    return cfg


def test_a_registered_toy_task_trains_through_lmforge_train(tmp_path, copy_task):
    assert main(["train", str(_config(tmp_path))]) == 0
    out = tmp_path / "run"
    meta = json.loads((out / "meta.json").read_text())
    assert meta["task"] == "copy" and meta["training"]["step"] == 150
    assert "[copy]" in (out / "run.toml").read_text()
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    vals = [r["loss"] for r in rows if r["split"] == "val"]
    # the copied half becomes predictable: of the 12 targets, 5 digits stay random (ln 10
    # each, 0.96 nats per token on average at best) and 7 can be learned; chance is ~2.3
    assert vals[-1] < 0.7 * vals[0] and vals[-1] < 1.5


def test_resume_is_checked_against_the_task_table(tmp_path, copy_task, capsys):
    assert main(["train", str(_config(tmp_path, steps=100))]) == 0
    assert main(["train", str(_config(tmp_path, steps=100, length=7)), "--resume"]) == 2
    assert "copy.length differs" in capsys.readouterr().err


def test_unknown_task_and_table_names(copy_task):
    with pytest.raises(ConfigError, match="did you mean 'copy'"):
        RunConfig.load(overrides=['task="cpoy"'])
    with pytest.raises(ConfigError, match="did you mean 'copy'"):
        RunConfig.load(overrides=["cop.length=3"])
    assert RunConfig.load(overrides=["copy.length=9"]).copy.length == 9


def test_defaults_by_architecture_and_refusals():
    assert get_task(RunConfig.load()).name == "causal-lm"
    assert get_task(RunConfig.load(overrides=['model.arch="encoder"'])).name == "mlm"
    s2s = ['model.arch="seq2seq"']
    assert get_task(RunConfig.load(overrides=s2s)).name == "translation"
    assert get_task(RunConfig.load(overrides=s2s + ['seq2seq.objective="span_corruption"'])).name \
        == "span-corruption"
    assert get_task(RunConfig.load(overrides=['task="pretrain"'])).name == "causal-lm"
    with pytest.raises(ConfigError, match="task = 'mlm' trains model.arch = 'encoder'"):
        get_task(RunConfig.load(overrides=['task="mlm"']))


def test_every_builtin_task_is_registered_with_its_table():
    assert {"causal-lm", "mlm", "translation", "span-corruption", "classify", "sft"} <= set(TASKS)
    for t in TASKS.values():
        assert t.summary, t.name
        if t.section:
            assert getattr(RunConfig(), t.section) == t.config()
