"""Early stopping on a validation metric, and the state a resumed run needs to continue it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from ..errors import ConfigError


@dataclass
class EarlyStopping:
    """Tracks the best value of ``metric`` over evaluations. ``patience`` evaluations in a row
    without an improvement of more than ``min_delta`` stop training; 0 = never stop (the best
    evaluation is still tracked, e.g. to keep the best weights)."""

    metric: str = "loss"
    mode: Literal["min", "max"] = "min"
    patience: int = 0
    min_delta: float = 0.0
    best: float | None = None
    best_step: int | None = None
    bad_evals: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("min", "max"):
            raise ConfigError(f"early stopping mode must be min or max, got {self.mode!r}")
        if self.patience < 0:
            raise ConfigError(f"patience must be >= 0, got {self.patience}")

    def update(self, step: int, metrics: dict) -> bool:
        """Record an evaluation; True when it is the best so far."""
        if self.metric not in metrics:
            raise ConfigError(f"early stopping watches {self.metric!r}, but the evaluation "
                              f"reports only {', '.join(sorted(metrics))}")
        value = float(metrics[self.metric])
        sign = 1.0 if self.mode == "max" else -1.0
        if self.best is None or sign * (value - self.best) > self.min_delta:
            self.best, self.best_step, self.bad_evals = value, step, 0
            return True
        self.bad_evals += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_evals >= self.patience

    def state_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k in ("best", "best_step", "bad_evals")}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_step = state["best"], state["best_step"]
        self.bad_evals = state["bad_evals"]
