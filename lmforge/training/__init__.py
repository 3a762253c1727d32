"""The training engine: configs, optimiser and schedule, checkpoints, metrics, the loop."""

from .average import average_model_dirs
from .config import DataConfig, RunConfig, TokenizerConfig, TrainConfig
from .early_stopping import EarlyStopping
from .classify_config import ClassifyConfig
from .optim import lr_at, make_optimizer
from .presets import PRESETS
from .trainer import Trainer, TrainResult

__all__ = ["DataConfig", "EarlyStopping", "ClassifyConfig", "PRESETS", "RunConfig",
           "TokenizerConfig", "TrainConfig", "TrainResult", "Trainer", "average_model_dirs",
           "lr_at", "make_optimizer"]
