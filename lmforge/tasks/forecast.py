"""Time-series forecasting (``task = "forecast"``; the ``[forecast]`` table is
:class:`~lmforge.tasks.forecast_config.ForecastConfig`, the series the CSV at ``data.path``).

CSV -> (T, C) values (:mod:`lmforge.data.timeseries`) -> chronological train / val / test
spans -> per-channel standardisation fitted on the training span -> (context, horizon)
windows whose targets lie in the training span -> a forecaster (``model.arch`` = patchtst,
timestep or lstm_forecaster; :mod:`lmforge.models.forecast`) trained on mean squared error
in standardised units -> the model directory (no tokenizer; meta.json's ``forecast`` holds
the scaler and the column names) -> at the end, a rolling-origin test on the test span in
data units: MAE, RMSE, MASE, sMAPE beside the seasonal naive forecast (eval.json).

Batches are a pure function of (seed, step, micro-step, rank), so ``--resume`` is exact.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import from_dict, to_dict
from ..data.timeseries import (
    Scaler,
    make_windows,
    read_series_csv,
    rolling_origins,
    split_spans,
    window_starts,
)
from ..errors import ConfigError
from ..evaluation.forecasting import forecast_metrics, seasonal_naive
from ..files.atomic import atomic_write_text
from ..modeldir import save_model_dir, update_meta
from ..models import ModelConfig, build_model
from ..models.forecast import FORECAST_ARCHS, ForecastShape
from .config import RunConfig
from .driver import RunState, train_task
from .forecast_config import ForecastConfig
from .forecast_predict import META_KEY, Forecaster, forecast_info
from .registry import Task, TaskData, register
from .steps import TrainRun, data_paths

EVAL_FILE = "eval.json"
MAX_VAL_WINDOWS = 2048
"""Validation windows evaluated at most (spread evenly over the validation span)."""


def forecast_loss(model, batch) -> torch.Tensor:
    """Mean squared error of the forecast, in standardised units: batch = (x (B, L, C), y (B, H, C))."""
    x, y = batch
    return F.mse_loss(model(x), y)


def forecast_model_config(model: ModelConfig, fc: ForecastConfig, channels: int) -> ModelConfig:
    """``[model]`` with the forecast shape: context_length = forecast.context, and
    ``forecast`` = {channels, horizon, patch_len, stride, revin}."""
    shape = ForecastShape(channels, fc.context, fc.horizon, fc.patch_len, fc.stride, fc.revin)
    d = to_dict(model)
    d.update(context_length=fc.context, forecast=shape.to_config(), vocab_size=0)
    cfg = from_dict(ModelConfig, d, "model")
    ForecastShape.of(cfg)  # patch_len vs context, ...
    return cfg


def train_batches(scaled: torch.Tensor, origins: np.ndarray, context: int, horizon: int,
                  batch_size: int, seed: int):
    """(step, micro, rank) -> (x (B, L, C), y (B, H, C)): B training windows drawn (with
    replacement) by a generator seeded from the arguments alone."""
    starts = torch.as_tensor(origins)
    back, ahead = torch.arange(-context, 0), torch.arange(horizon)

    def batch(step: int, micro: int, rank: int):
        g = torch.Generator().manual_seed(hash((seed, step, micro, rank)) % 2**63)
        t = starts[torch.randint(0, len(starts), (batch_size,), generator=g)]  # (B,)
        return scaled[t[:, None] + back], scaled[t[:, None] + ahead]
    return batch


class ForecastTask(Task):
    """``task = "forecast"``; ``run.state`` holds the series, spans, scaler and model config."""

    name = "forecast"
    summary = "forecast a time series from a CSV (PatchTST, per-step Transformer, LSTM)"
    section, config = "forecast", ForecastConfig
    archs = FORECAST_ARCHS

    def check(self, cfg: RunConfig) -> None:
        paths = data_paths(cfg)
        if len(paths) != 1:
            raise ConfigError(f"data.path: task = \"forecast\" reads one CSV, got {len(paths)} paths")

    def tokenizer(self, run: RunState):
        return None  # numbers in, numbers out

    def fit_vocab(self, run: RunState) -> int:
        return 0

    def prepare(self, run: RunState) -> TaskData:
        """Read and split the series, fit the scaler on the training span, make the batches
        and the validation loss."""
        cfg, fc, s = run.cfg, run.cfg.forecast, run.state
        series = s["series"] = read_series_csv(data_paths(cfg)[0], fc.time_column, fc.columns,
                                               fc.missing)
        spans = s["spans"] = split_spans(len(series.values), fc.val_fraction, fc.test_fraction,
                                         fc.context, fc.horizon)
        scaler = s["scaler"] = Scaler.fit(series.values[:spans.train_end])
        s["mcfg"] = forecast_model_config(cfg.model, fc, len(series.columns))
        scaled = torch.as_tensor(scaler.transform(series.values), dtype=torch.float32)  # (T, C)
        train = window_starts(fc.context, fc.horizon, 0, spans.train_end)
        val = window_starts(fc.context, fc.horizon, spans.train_end, spans.val_end)
        if len(val) > MAX_VAL_WINDOWS:
            val = val[np.linspace(0, len(val) - 1, MAX_VAL_WINDOWS).round().astype(int)]
        tc = cfg.train
        batch = train_batches(scaled, train, fc.context, fc.horizon, tc.batch_size, cfg.seed)
        vx, vy = make_windows(scaled.numpy(), val, fc.context, fc.horizon)
        vx, vy = torch.as_tensor(vx), torch.as_tensor(vy)
        step = fc.eval_batch_size
        eval_batches = (lambda: [(vx[i:i + step], vy[i:i + step]) for i in range(0, len(vx), step)]) \
            if len(vx) else None
        meta = {"path": series.path, "steps": len(series.values), "columns": series.columns,
                "train_windows": len(train), "val_windows": len(val),
                "spans": {"train": [0, spans.train_end], "val": [spans.train_end, spans.val_end],
                          "test": [spans.val_end, spans.n]}}
        return TaskData(train_batch=batch, tokens_per_batch=tc.batch_size * fc.context,
                        eval_batches=eval_batches, meta=meta)

    def build_model(self, run: RunState):
        model = run.state["model"] = build_model(run.state["mcfg"])
        return model

    def make_objective(self, run: RunState):
        return forecast_loss

    def meta(self, run: RunState) -> dict:
        s = run.state
        info = forecast_info(s["series"].columns, s["series"].time_column, s["scaler"],
                             run.cfg.forecast, s["spans"], s["series"].times)
        return {META_KEY: info, "tokenizer": None}

    def save(self, run: RunState, model, meta) -> None:
        save_model_dir(run.out, model, None, meta)

    def finish(self, run: RunState, trainer, train_run: TrainRun) -> None:
        """The rolling-origin test (data units) against the seasonal naive forecast: metrics
        test_mae/rmse/mase/smape and naive_*; eval.json and meta.json's ``eval``."""
        s, fc = run.state, run.cfg.forecast
        model = s["model"].eval()
        f = Forecaster(model, ForecastShape.of(s["mcfg"]), s["scaler"], s["series"].columns,
                       s["series"].time_column, {})
        result = test_scores(f, s["series"].values, s["spans"], fc.season, fc.eval_origins)
        if result:
            for name in ("model", "seasonal_naive"):
                prefix = "test" if name == "model" else "naive"
                train_run.metrics.update({f"{prefix}_{k}": round(v, 6)
                                          for k, v in result[name].items()})
            train_run.report = (f"test ({result['origins']} origins x {f.horizon} steps): "
                                f"MASE {result['model']['mase']:.4f} (seasonal naive "
                                f"{result['seasonal_naive']['mase']:.4f}), sMAPE "
                                f"{result['model']['smape']:.2f}% ({result['seasonal_naive']['smape']:.2f}%)")
            atomic_write_text(Path(run.out) / EVAL_FILE, json.dumps({"test": result}, indent=2))
            update_meta(run.out, eval={"test": result})


def test_scores(f: Forecaster, values: np.ndarray, spans, season: int, n_origins: int) -> dict:
    """Rolling origins over the test span: each forecast sees only the steps before its
    origin. {"origins": N, "model": metrics, "seasonal_naive": metrics} ({} without a test span)."""
    origins = rolling_origins(spans.val_end, spans.n, f.horizon, n_origins, min_history=f.context)
    if not origins:
        return {}
    x, y = make_windows(values, np.asarray(origins), f.context, f.horizon)
    pred = f.predict_windows(x)  # (N, H, C)
    naive = np.stack([seasonal_naive(values[:t], f.horizon, season) for t in origins])
    train = values[:spans.train_end]
    return {"origins": len(origins), "model": forecast_metrics(y, pred, train, season),
            "seasonal_naive": forecast_metrics(y, naive, train, season)}


register(ForecastTask())


def train_forecaster(cfg: RunConfig, **kw) -> TrainRun:
    """:func:`~lmforge.tasks.train_task` with ``task = "forecast"``."""
    cfg.task = ForecastTask.name
    return train_task(cfg, **kw)
