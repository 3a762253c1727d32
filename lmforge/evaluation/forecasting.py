"""Forecast accuracy and classical baselines.

Metrics (``y`` the truth, ``f`` the forecast, arrays of one shape; errors averaged over every
element unless ``axis`` says otherwise):

* MAE = mean |y - f|;  RMSE = sqrt(mean (y - f)^2);
* MASE = MAE / scale, where scale = the in-sample MAE of the seasonal naive forecast on the
  training span, mean_t |x_t - x_{t-m}| for t = m .. T_train - 1 (:func:`mase_scale`);
  below 1 = better than the seasonal naive forecast was in-sample;
* sMAPE = mean 200 |y - f| / (|y| + |f|) in percent (0 where both are 0).

Baselines, each ``history (T,) -> forecast (H,)`` for one channel:
:func:`seasonal_naive` (repeat the last season), :func:`mean_forecast`, :func:`arima_forecast`
(SARIMAX from statsmodels, seasonal when ``m`` > 1) and :func:`stl_arima_forecast` (STL
decomposition, ARIMA on the seasonally adjusted series, the last season's seasonal component
added back, as statsmodels' STLForecast does). statsmodels is imported when a statsmodels baseline is first called.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..viz.figure import pyplot, save_figure

Baseline = Callable[[np.ndarray, int], np.ndarray]


def mae(y: np.ndarray, f: np.ndarray, axis=None) -> np.ndarray | float:
    """Mean absolute error."""
    return np.mean(np.abs(np.asarray(y) - np.asarray(f)), axis=axis)


def rmse(y: np.ndarray, f: np.ndarray, axis=None) -> np.ndarray | float:
    """Root mean squared error."""
    return np.sqrt(np.mean((np.asarray(y) - np.asarray(f)) ** 2, axis=axis))


def smape(y: np.ndarray, f: np.ndarray, axis=None) -> np.ndarray | float:
    """Symmetric MAPE in percent: mean 200 |y - f| / (|y| + |f|), 0 where both are 0."""
    y, f = np.asarray(y, dtype=np.float64), np.asarray(f, dtype=np.float64)
    den = np.abs(y) + np.abs(f)
    ratio = np.divide(200.0 * np.abs(y - f), den, out=np.zeros_like(den), where=den > 0)
    return np.mean(ratio, axis=axis)


def mase_scale(train: np.ndarray, m: int = 1) -> np.ndarray | float:
    """In-sample seasonal naive MAE on the training span: mean |x_t - x_{t-m}| over time (axis
    0); per channel for a (T, C) array. A zero scale (a constant series) becomes 1."""
    train = np.asarray(train, dtype=np.float64)
    m = max(1, m)
    if len(train) <= m:
        raise ValueError(f"MASE needs a training span longer than the season ({m}), got {len(train)}")
    scale = np.mean(np.abs(train[m:] - train[:-m]), axis=0)
    return np.where(scale > 0, scale, 1.0)


def mase(y: np.ndarray, f: np.ndarray, train: np.ndarray, m: int = 1, axis=None):
    """MAE / :func:`mase_scale` (train, m). With (..., C) arrays the scale is per channel."""
    return np.mean(np.abs(np.asarray(y) - np.asarray(f)) / mase_scale(train, m), axis=axis)


def forecast_metrics(y: np.ndarray, f: np.ndarray, train: np.ndarray, m: int = 1) -> dict:
    """{mae, rmse, mase, smape} over all elements (``y``, ``f``: (..., C) or (...,))."""
    return {"mae": float(mae(y, f)), "rmse": float(rmse(y, f)),
            "mase": float(mase(y, f, train, m)), "smape": float(smape(y, f))}


# -- baselines ---------------------------------------------------------------------------------
def seasonal_naive(history: np.ndarray, horizon: int, m: int = 1) -> np.ndarray:
    """f_{T+h} = x_{T+h-m*k} for the smallest k with h <= m k: the last season repeated
    (m = 1: the last value). ``history`` (T,) or (T, C)."""
    history = np.asarray(history, dtype=np.float64)
    m = max(1, min(m, len(history)))
    last = history[-m:]
    return np.stack([last[h % m] for h in range(horizon)])


def mean_forecast(history: np.ndarray, horizon: int, m: int = 1) -> np.ndarray:
    """The mean of ``history`` at every step."""
    history = np.asarray(history, dtype=np.float64)
    return np.repeat(history.mean(0, keepdims=True), horizon, axis=0)


def arima_forecast(history: np.ndarray, horizon: int, m: int = 1,
                   order: tuple = (1, 1, 1), seasonal_order: tuple | None = None) -> np.ndarray:
    """SARIMAX(order) x (seasonal_order, m) fitted on ``history`` (T,); the default seasonal
    order is (0, 1, 1) when m > 1, none otherwise. Falls back to the seasonal naive forecast
    when the fit fails (a singular or too short series)."""
    from statsmodels.tsa.statespace.sarimax import SARIMAX  # heavy: only when used

    history = np.asarray(history, dtype=np.float64)
    seasonal = seasonal_order if seasonal_order is not None else ((0, 1, 1) if m > 1 else (0, 0, 0))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = SARIMAX(history, order=order, seasonal_order=(*seasonal, m if m > 1 else 0),
                          enforce_stationarity=False, enforce_invertibility=False).fit(disp=False, maxiter=50)
            out = np.asarray(fit.forecast(horizon), dtype=np.float64)
    except (ValueError, np.linalg.LinAlgError):
        return seasonal_naive(history, horizon, m)
    return out if np.all(np.isfinite(out)) else seasonal_naive(history, horizon, m)


def stl_arima_forecast(history: np.ndarray, horizon: int, m: int = 1,
                       order: tuple = (1, 1, 1)) -> np.ndarray:
    """STL (robust) decomposition with period ``m``; ARIMA(order) (:func:`arima_forecast`,
    non-seasonal) on the seasonally adjusted series (trend + remainder), plus the seasonal
    component's last season repeated. m < 2 or fewer than 2 m + 1 steps = plain ARIMA."""
    from statsmodels.tsa.seasonal import STL  # heavy: only when used

    history = np.asarray(history, dtype=np.float64)
    if m < 2 or len(history) < 2 * m + 1:
        return arima_forecast(history, horizon, 1, order)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            seasonal = STL(history, period=m, robust=True).fit().seasonal
    except (ValueError, np.linalg.LinAlgError):
        return seasonal_naive(history, horizon, m)
    adjusted = arima_forecast(history - seasonal, horizon, 1, order)
    return adjusted + seasonal_naive(seasonal, horizon, m)


BASELINES: dict[str, Baseline] = {"seasonal_naive": seasonal_naive, "mean": mean_forecast,
                                  "sarimax": arima_forecast, "stl_arima": stl_arima_forecast}
"""The classical forecasters by name: fn(history (T,), horizon, m) -> (horizon,)."""


def rolling_errors(series: np.ndarray, origins: Sequence[int], horizon: int,
                   forecast: Callable[[np.ndarray, int], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(truth, forecasts), each (n_origins, horizon, ...): at each origin t, ``forecast``
    sees ``series[:t]`` only and predicts ``series[t:t+horizon]``."""
    ys, fs = [], []
    for t in origins:
        ys.append(series[t:t + horizon])
        fs.append(np.asarray(forecast(series[:t], horizon)))
    return np.stack(ys), np.stack(fs)


def per_horizon(y: np.ndarray, f: np.ndarray, train: np.ndarray, m: int) -> dict[str, np.ndarray]:
    """MASE and sMAPE per horizon step: ``y``, ``f`` (n_origins, H, ...) -> each (H,)."""
    H = y.shape[1]
    ym, fm = y.reshape(len(y), H, -1), f.reshape(len(f), H, -1)
    scale = np.reshape(mase_scale(np.reshape(train, (len(train), -1)), m), (1, 1, -1))
    return {"mase": np.mean(np.abs(ym - fm) / scale, axis=(0, 2)),
            "smape": np.array([smape(ym[:, h], fm[:, h]) for h in range(H)])}


def plot_forecast(history_times: Sequence, history: np.ndarray, future_times: Sequence,
                  forecasts: dict[str, np.ndarray], path: str | Path, truth: np.ndarray | None = None,
                  title: str = "forecast", channel_names: Sequence[str] = ()) -> Path:
    """One panel per channel: the history, the truth (when known) and each forecast.
    ``history`` (T,) or (T, C); ``forecasts`` name -> (H,) or (H, C); times are x values."""
    plt = pyplot()
    hist = np.asarray(history, dtype=np.float64).reshape(len(history), -1)
    C = hist.shape[1]
    fig, axes = plt.subplots(C, 1, figsize=(9, 3 * C), squeeze=False)
    hx, fx = list(range(len(hist))), list(range(len(hist), len(hist) + len(future_times)))
    for c, ax in enumerate(axes[:, 0]):
        ax.plot(hx, hist[:, c], color="black", lw=1, label="history")
        if truth is not None:
            ax.plot(fx, np.reshape(truth, (len(fx), -1))[:, c], color="black", lw=2,
                    ls="--", label="truth", zorder=5)
        for name, f in forecasts.items():
            ax.plot(fx, np.reshape(f, (len(fx), -1))[:, c], lw=1.5, label=name)
        ax.set_title(f"{title}: {channel_names[c]}" if c < len(channel_names) else title)
        ticks = np.linspace(0, len(hx) + len(fx) - 1, min(6, len(hx) + len(fx))).round().astype(int)
        labels = list(history_times) + list(future_times)
        ax.set_xticks(ticks, [str(labels[i]) for i in ticks], fontsize=7)
        ax.legend(fontsize=7, loc="upper left")
    return save_figure(fig, path)
