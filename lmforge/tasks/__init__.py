"""One module per job. Each training task registers itself in :data:`TASKS` (see
:mod:`lmforge.tasks.registry`) and owns its config table; :func:`train_task` runs any of them
through the shared steps (:mod:`lmforge.tasks.driver`).

Adding a task: write ``lmforge/tasks/NAME.py`` with a :class:`Task` subclass and a
``register(...)`` call, and add the module to the import line below (docs/tasks.md).
"""

from __future__ import annotations

from .config import DataConfig, RunConfig, TokenizerConfig
from .driver import RunState, train_task
from .registry import TASKS, Task, TaskData, get_task, register, unregister
from .steps import TrainRun

# the task registry: each module registers its task(s) when imported
from . import lm, mlm, seq2seq, span_corruption, classify, sft, forecast, image_classify  # noqa: E402,F401,E501

__all__ = ["DataConfig", "RunConfig", "RunState", "TASKS", "Task", "TaskData", "TokenizerConfig",
           "TrainRun", "get_task", "register", "train_task", "unregister"]
