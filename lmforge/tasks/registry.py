"""The task registry: every job `lmforge train` can run, by name.

A task is a :class:`Task` subclass registered with :func:`register`. It says which model
architectures it trains, which table of the run config is its own (``[classify]``, ``[sft]``,
...), and implements the steps that are its own — usually only :meth:`Task.prepare` (the
data and batches) and :attr:`Task.objective`. :func:`lmforge.tasks.driver.train_task` runs the
steps every task shares in one order::

    check -> output directory (lock, --resume check) -> tokenizer -> vocabulary -> prepare
    -> run.toml -> model -> meta.json -> trainer -> fit -> finish

Adding a task is one module with one ``register(MyTask())`` line, imported once from
``lmforge/tasks/__init__.py`` (see docs/tasks.md).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable

from ..errors import ConfigError
from ..modeldir import save_model_dir
from ..modeldir.meta import ModelMeta
from ..models import build_model
from ..training import TrainConfig, Trainer
from .steps import data_paths, fit_vocab, run_tokenizer

if TYPE_CHECKING:  # (type hints only: the driver imports this module)
    from .driver import RunState


@dataclass
class TaskData:
    """What :meth:`Task.prepare` hands the driver: the training batches and how to evaluate."""

    train_batch: Callable[[int, int, int], Any]
    """(step, micro_step, rank) -> batch: a pure function, so a resumed run sees the same data."""
    tokens_per_batch: int
    """Tokens in one micro-batch (for tokens/s)."""
    eval_batches: Callable[[], Iterable] | None = None
    """Validation batches; the mean objective over them is the validation loss."""
    evaluate: Callable[[Any], dict] | None = None
    """model -> {"loss": ..., other metrics}: replaces the mean objective over eval_batches."""
    meta: dict = field(default_factory=dict)
    """The ``data`` entry of meta.json (paths, sizes, filtering report, ...)."""
    trainer_options: dict = field(default_factory=dict)
    """Further keyword arguments for the Trainer (early_stopping, on_best)."""
    train_config: TrainConfig | None = None
    """The ``[train]`` settings to train with when the task derives them from its own table
    (``classify.epochs`` sets max_steps); None = ``run.cfg.train``. run.toml records the
    config as given, so ``--resume`` compares what the user wrote."""


class Task:
    """One job: its config table, data, objective and evaluation. Override what is yours."""

    name: ClassVar[str] = ""
    """The value of ``task`` in a run config that selects it."""
    summary: ClassVar[str] = ""
    """One line for `lmforge train --help` and docs/config.md."""
    section: ClassVar[str] = ""
    """The table of the run config that configures it ("" = none)."""
    config: ClassVar[type | None] = None
    """The dataclass of that table."""
    archs: ClassVar[tuple[str, ...]] = ("decoder",)
    """The ``model.arch`` values it trains."""
    default_arch: ClassVar[str | tuple[str, ...]] = ""
    """``task = ""`` picks this task for a model of this arch, or of one of these archs (when
    :meth:`claims` agrees)."""
    objective: ClassVar[Callable | None] = None
    """loss = objective(model, batch); or override :meth:`make_objective`."""

    def claims(self, cfg) -> bool:
        """Whether ``task = ""`` means this task for ``cfg`` (several may share an arch)."""
        return True

    def check(self, cfg) -> None:
        """Refuse a config this task cannot run, before anything is written."""

    def special_tokens(self, cfg) -> list[str] | None:
        """Special tokens a tokenizer trained for this task must have (None: the kind's own)."""
        return None

    def tokenizer(self, run: RunState):
        """The run's tokenizer (default: the saved one on resume, ``tokenizer.path``, or one
        trained on ``data.path`` with :meth:`special_tokens`)."""
        return run_tokenizer(run.cfg, run.out, run.resume, data_paths(run.cfg),
                             self.special_tokens(run.cfg))

    def fit_vocab(self, run: RunState) -> int:
        """Set ``model.vocab_size`` from the tokenizer (when 0) or check it; the vocab size."""
        return fit_vocab(run.cfg, run.tokenizer)

    def prepare(self, run: RunState) -> TaskData:
        """Read and encode the data; return the batches (required)."""
        raise NotImplementedError(f"task {self.name!r} must implement prepare()")

    def build_model(self, run: RunState):
        """The model to train (default: ``build_model(model)`` after seeding)."""
        return build_model(run.cfg.model)

    def make_objective(self, run: RunState) -> Callable:
        if type(self).objective is None:
            raise NotImplementedError(f"task {self.name!r} must set objective")
        return type(self).objective

    def meta(self, run: RunState) -> dict:
        """Task-specific meta.json fields (seq2seq_tokens, classifier, ...): typed fields of
        :class:`~lmforge.modeldir.meta.ModelMeta` by name; other names are kept in its extra."""
        return {}

    def save(self, run: RunState, model, meta: ModelMeta) -> None:
        """Write the model directory (called at each checkpoint and at the end)."""
        save_model_dir(run.out, model, run.tokenizer, meta)

    def make_trainer(self, run: RunState, model, data: TaskData, on_save):
        return Trainer(model, self.make_objective(run), train_batch=data.train_batch,
                       eval_batches=data.eval_batches, evaluate_fn=data.evaluate,
                       cfg=data.train_config or run.cfg.train, out_dir=run.out,
                       tokens_per_batch=data.tokens_per_batch, on_save=on_save,
                       **data.trainer_options)

    def finish(self, run: RunState, trainer, train_run) -> None:
        """After training ends on the main process (held-out metrics, test scores, reports):
        fill ``train_run.metrics`` / ``train_run.report``; called only when the run reached
        its end (max_steps or early stopping), not when it was interrupted."""


TASKS: dict[str, Task] = {}
"""Every registered task, by name."""


def register(task: Task) -> Task:
    """Add ``task`` to :data:`TASKS` (its name must be new); returns it."""
    if not task.name:
        raise ValueError(f"{type(task).__name__} has no name")
    if task.name in TASKS and type(TASKS[task.name]) is not type(task):
        raise ValueError(f"a task named {task.name!r} is registered already")
    if task.section and task.config is None:
        raise ValueError(f"task {task.name!r} has a section but no config dataclass")
    TASKS[task.name] = task
    return task


def unregister(name: str) -> None:
    """Remove a task (tests that register toy tasks clean up with this)."""
    TASKS.pop(name, None)


def task_sections() -> dict[str, type]:
    """The config tables of the registered tasks: section name -> dataclass (a table may
    serve several tasks, like ``[seq2seq]`` for translation and span corruption)."""
    out: dict[str, type] = {}
    for t in TASKS.values():
        if t.section:
            if out.get(t.section, t.config) is not t.config:
                raise ValueError(f"tasks disagree on the dataclass of [{t.section}]")
            out[t.section] = t.config
    return out


LEGACY_NAMES = {"pretrain": ""}
"""Earlier values of ``task``: ``pretrain`` meant "by model.arch", as "" does now."""


def check_task_name(name: str, where: str = "task") -> None:
    if name in ("", *LEGACY_NAMES) or name in TASKS:
        return
    close = difflib.get_close_matches(name, sorted(TASKS), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"{where}: unknown task {name!r}{hint} (known: {', '.join(sorted(TASKS))})")


def get_task(cfg) -> Task:
    """The task ``cfg`` asks for: ``cfg.task`` by name, or for ``task = ""`` the default task
    of ``model.arch``; a task that cannot train that arch is a ConfigError."""
    name = LEGACY_NAMES.get(cfg.task, cfg.task)
    arch = cfg.model.arch
    if not name:
        picks = [t for t in TASKS.values() if arch in (
            (t.default_arch,) if isinstance(t.default_arch, str) else t.default_arch)
            and t.claims(cfg)]
        if not picks:
            raise ConfigError(f"no task trains model.arch = {arch!r} by default; set task to "
                              f"one of {', '.join(sorted(TASKS))}")
        return picks[0]
    check_task_name(name)
    task = TASKS[name]
    if task.archs and arch not in task.archs:
        want = " or ".join(repr(a) for a in task.archs)
        raise ConfigError(f"task = {name!r} trains model.arch = {want}, but model.arch is "
                          f"{arch!r}; change one of them")
    return task
