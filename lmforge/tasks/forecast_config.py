"""``[forecast]``: the run config of ``task = "forecast"`` (:mod:`lmforge.tasks.forecast`).
The series is the CSV at ``data.path``; see docs/forecasting.md."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..errors import ConfigError


@dataclass
class ForecastConfig:
    time_column: str = ""
    """Name of the time column of the CSV ("" = the first column)."""
    columns: list[str] = field(default_factory=list)
    """The value columns to forecast (channels); [] = every column but the time column."""
    missing: Literal["error", "ffill", "interpolate"] = "error"
    """Empty/NA cells: refuse them, carry the last value forward, or interpolate linearly."""
    context: int = 96
    """Past steps the model sees (model.context_length is set to this)."""
    horizon: int = 24
    """Steps forecast at once; `lmforge forecast --horizon` may ask for at most this many."""
    patch_len: int = 16
    """patchtst: steps per patch."""
    stride: int = 8
    """patchtst: steps between consecutive patch starts."""
    revin: bool = True
    """Normalise each input window per channel by its own mean/std and undo it on the output
    (RevIN); on top of the dataset standardisation fitted on the training span."""
    val_fraction: float = 0.1
    """Share of the series (after the training span, in time order) for validation."""
    test_fraction: float = 0.2
    """Share of the series (the end) for the held-out test, scored once at the end."""
    season: int = 1
    """Seasonal period in steps (12 for monthly data with a yearly cycle): the seasonal naive
    baseline and the MASE scale use it; 1 = none."""
    eval_origins: int = 0
    """Rolling-origin test: this many forecast origins spread over the test span; 0 = every step."""
    eval_batch_size: int = 256
    """Windows per batch when evaluating."""

    def __post_init__(self) -> None:
        for name in ("context", "horizon", "patch_len", "stride", "season", "eval_batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 2**20:
                raise ConfigError(f"forecast.{name}: must be an integer from 1 to 2**20, got {v!r}")
        if self.eval_origins < 0:
            raise ConfigError(f"forecast.eval_origins: must be >= 0, got {self.eval_origins}")
        for name in ("val_fraction", "test_fraction"):
            if not 0.0 <= getattr(self, name) < 0.9:
                raise ConfigError(f"forecast.{name}: must be in [0, 0.9), got {getattr(self, name)}")
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ConfigError("forecast.val_fraction + forecast.test_fraction must stay below 0.9 "
                              "(the rest is the training span)")
