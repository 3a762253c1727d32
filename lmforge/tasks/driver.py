"""One driver for every training task: the steps they share, in one order.

    check -> output directory (--resume checked against run.toml) -> tokenizer -> vocabulary
    -> prepare (the task's data and batches) -> run.toml -> model -> meta.json -> trainer
    -> fit -> loss plot and result.json -> finish (the task's held-out metrics)

A task (:class:`~lmforge.tasks.registry.Task`) overrides only the steps that are its own.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import to_dict
from ..files.lock import lock_output
from ..modeldir.meta import ModelMeta, Source
from ..training.host_memory import set_host_memory
from .config import RunConfig
from .registry import Task, TaskData, get_task
from .steps import TrainRun, finish_run, machine, prepare_out_dir, write_run_file


@dataclass
class RunState:
    """What the steps of one run share: the config, where it writes, and what earlier steps
    made (the tokenizer, the vocabulary size, anything a task keeps in ``state``)."""

    cfg: RunConfig
    out: Path
    resume: bool
    task: Task
    tokenizer: Any = None
    vocab: int = 0
    state: dict = field(default_factory=dict)
    """Free room for a task's own objects between its steps (a loaded base model, ...)."""
    trainer: Any = None
    """The Trainer, once made (batch functions ask it for the world size)."""

    @property
    def world_size(self) -> int:
        """Processes drawing batches (torchrun); known once the trainer exists."""
        return self.trainer.dist.world_size if self.trainer is not None else 1


def base_meta(run: RunState, model, data: TaskData) -> ModelMeta:
    """The meta.json every task writes (a trained model: its task, data, tokenizer, size,
    config, machine), with the task's own :meth:`Task.meta` fields added."""
    tok = run.cfg.tokenizer
    params = model.num_params() if hasattr(model, "num_params") else \
        sum(p.numel() for p in model.parameters())
    meta = ModelMeta(task=run.task.name, source=Source(kind="trained"), data=data.meta,
                     tokenizer={"kind": "file" if tok.path else tok.kind, "vocab_size": run.vocab},
                     parameters=params, run_config=to_dict(run.cfg), machine=machine())
    return meta.with_fields(**run.task.meta(run))


def train_task(cfg: RunConfig, *, resume: bool = False, overwrite: bool = False,
               stop_at: int | None = None) -> TrainRun:
    """Train with the task ``cfg.task`` names (or, for ``task = ""``, the default task of
    ``model.arch``); writes the model directory and run files to ``cfg.out_dir``.

    ``resume`` continues the latest checkpoint (the config must match its run.toml);
    ``overwrite`` discards an earlier run's checkpoints; ``stop_at`` ends the run early at
    that step (as a kill would, for tests). Returns a :class:`~lmforge.tasks.steps.TrainRun`.

    The main process holds ``cfg.out_dir``'s lock (:func:`lmforge.files.lock_output`) for the
    whole run: a second run into the same directory is refused with "in use by pid N"."""
    with lock_output(cfg.out_dir, enabled=int(os.environ.get("RANK", "0")) == 0):
        return _train_task(cfg, resume=resume, overwrite=overwrite, stop_at=stop_at)


def _train_task(cfg: RunConfig, *, resume: bool, overwrite: bool,
                stop_at: int | None) -> TrainRun:
    task = get_task(cfg)
    if not cfg.task:  # run.toml records the task that ran, so --resume compares like with like
        cfg.task = task.name
    task.check(cfg)
    set_host_memory(cfg.train.host_memory)  # before the model loads: its buffers come and go too
    out = prepare_out_dir(cfg, resume, overwrite, task.section)
    run = RunState(cfg, out, resume, task)
    run.tokenizer = task.tokenizer(run)
    run.vocab = task.fit_vocab(run)
    data = task.prepare(run)
    write_run_file(cfg, out)

    torch.manual_seed(cfg.seed)
    model = task.build_model(run)
    meta = base_meta(run, model, data)
    trainer = run.trainer = task.make_trainer(
        run, model, data, on_save=lambda m, summary: task.save(run, m, meta.with_fields(training=summary)))
    t0 = time.time()
    result = trainer.fit(resume=resume, stop_at=stop_at)
    train_run = TrainRun(out, result, cfg, run.tokenizer, model, finish_run(trainer, result, out, t0))
    max_steps = (data.train_config or cfg.train).max_steps
    complete = result.step >= max_steps or result.stopped_early
    if complete and trainer.dist.is_main:
        task.finish(run, trainer, train_run)
    return train_run
