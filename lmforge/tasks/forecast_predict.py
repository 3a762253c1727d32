"""A trained forecaster and what it needs to forecast in data units: the model, the scaler
fitted on its training span and the column names (meta.json's ``forecast`` entry).

A forecast is at most the trained horizon long: a longer ``horizon`` is refused (the model
was trained to forecast ``horizon`` steps at once; feeding its forecasts back in would
compound errors silently — retrain with a longer ``forecast.horizon`` instead).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.timeseries import Scaler
from ..errors import CheckpointError, ConfigError, DataError
from ..modeldir.directory import (
    check_weights_fit,
    load_state,
    read_config,
    read_meta,
    skip_init,
)
from ..models import build_model
from ..models.forecast import FORECAST_ARCHS, ForecastShape

META_KEY = "forecast"
"""The meta.json entry of a forecaster: columns, time_column, scaler, season, missing, ..."""


@dataclass
class Forecaster:
    """A forecaster ready to use on raw values."""

    model: nn.Module
    shape: ForecastShape
    scaler: Scaler
    columns: list[str]
    """Channel names, in the model's channel order."""
    time_column: str
    info: dict
    """meta.json's ``forecast`` entry as saved."""

    @property
    def context(self) -> int:
        return self.shape.context

    @property
    def horizon(self) -> int:
        return self.shape.horizon

    @torch.no_grad()
    def predict_windows(self, windows: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Forecasts in data units: ``windows`` (N, context, C) raw values -> (N, horizon, C)."""
        dev = next(self.model.parameters()).device
        out = []
        for i in range(0, len(windows), batch_size):
            x = torch.as_tensor(self.scaler.transform(windows[i:i + batch_size]),
                                dtype=torch.float32, device=dev)
            out.append(self.model(x).double().cpu().numpy())
        if not out:
            return np.zeros((0, self.horizon, self.shape.channels))
        return self.scaler.inverse(np.concatenate(out))

    def predict(self, values: np.ndarray, horizon: int | None = None) -> np.ndarray:
        """The ``horizon`` (default: the trained one) steps after ``values`` (T, C) raw, from
        its last ``context`` steps -> (horizon, C)."""
        H = self.horizon if horizon is None else horizon
        check_horizon(H, self.horizon)
        if len(values) < self.context:
            raise DataError(f"the series has {len(values)} steps; this model needs the last "
                            f"{self.context} (its context) to forecast")
        return self.predict_windows(np.asarray(values[-self.context:])[None])[0, :H]


def check_horizon(asked: int, trained: int) -> None:
    """Refuse a horizon the model was not trained for (see the module docstring)."""
    if asked < 1 or asked > trained:
        raise ConfigError(f"--horizon {asked}: this model forecasts 1 to {trained} steps (its "
                          f"trained horizon); ask for at most {trained}, or retrain with "
                          f"forecast.horizon = {asked}")


def load_forecaster(path: str | Path, device: str = "cpu") -> Forecaster:
    """Load a model directory written by ``task = "forecast"`` (eval mode, on ``device``)."""
    path = Path(path)
    cfg = read_config(path)
    if cfg.arch not in FORECAST_ARCHS:
        raise ConfigError(f"{path} holds a model.arch = {cfg.arch!r} model, not a forecaster "
                          f"({', '.join(FORECAST_ARCHS)}); train one with task = \"forecast\"")
    info = read_meta(path).extra.get(META_KEY)
    if not isinstance(info, dict) or "scaler" not in info or "columns" not in info:
        raise CheckpointError(f"{path / 'meta.json'} has no forecast entry (scaler, columns); "
                              "the model directory was not written by task = \"forecast\"")
    check_weights_fit(path, cfg)
    with skip_init():
        model = build_model(cfg)
    load_state(path, model)
    model.to(device).eval()
    return Forecaster(model, ForecastShape.of(cfg), Scaler.from_dict(info["scaler"]),
                      list(info["columns"]), info.get("time_column", ""), info)


def forecast_info(columns: list[str], time_column: str, scaler: Scaler, fc, spans, times) -> dict:
    """meta.json's ``forecast`` entry for a run with ``[forecast]`` table ``fc``."""
    return {"columns": columns, "time_column": time_column, "scaler": scaler.to_dict(),
            "context": fc.context, "horizon": fc.horizon, "season": fc.season,
            "missing": fc.missing, "train_end": spans.train_end, "val_end": spans.val_end,
            "n": spans.n, "train_until": times[spans.train_end - 1], "last_time": times[-1]}

