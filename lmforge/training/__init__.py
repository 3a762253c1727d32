"""The training engine: the loop, optimiser and schedule, precision, checkpoints and exact
resume, metrics, early stopping, distributed data parallelism. It knows objectives, not tasks:
the run config and the tasks that use this engine live in :mod:`lmforge.tasks`."""

from .config import TrainConfig
from .early_stopping import EarlyStopping
from .optim import lr_at, make_optimizer
from .trainer import Trainer, TrainResult

__all__ = ["EarlyStopping", "TrainConfig", "TrainResult", "Trainer",
           "lr_at", "make_optimizer"]
