"""The training engine: configs, optimiser and schedule, checkpoints, metrics, the loop."""

from .config import DataConfig, RunConfig, TokenizerConfig, TrainConfig
from .optim import lr_at, make_optimizer
from .presets import PRESETS
from .trainer import Trainer, TrainResult

__all__ = ["DataConfig", "PRESETS", "RunConfig", "TokenizerConfig", "TrainConfig", "TrainResult",
           "Trainer", "lr_at", "make_optimizer"]
