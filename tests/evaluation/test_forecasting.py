"""Forecast metrics against hand-computed values; baselines on series whose answer is known."""

import numpy as np
import pytest

from lmforge.evaluation.forecasting import (
    arima_forecast,
    forecast_metrics,
    mae,
    mase,
    mase_scale,
    mean_forecast,
    per_horizon,
    plot_forecast,
    rmse,
    rolling_errors,
    seasonal_naive,
    smape,
    stl_arima_forecast,
)


def test_metrics_by_hand():
    y = np.array([1.0, 2.0, 4.0, 0.0])
    f = np.array([2.0, 2.0, 1.0, 0.0])
    assert mae(y, f) == pytest.approx((1 + 0 + 3 + 0) / 4)
    assert rmse(y, f) == pytest.approx(np.sqrt((1 + 0 + 9 + 0) / 4))
    # sMAPE: 200|y-f|/(|y|+|f|): 200/3, 0, 600/5, 0 (both zero counts 0)
    assert smape(y, f) == pytest.approx((200 / 3 + 0 + 120 + 0) / 4)


def test_mase_scaled_by_in_sample_seasonal_naive():
    train = np.array([1.0, 3.0, 2.0, 6.0, 4.0])
    # m = 2: |2-1|, |6-3|, |4-2| -> mean 2; m = 1: 2, 1, 4, 2 -> mean 2.25
    assert mase_scale(train, 2) == pytest.approx(2.0)
    assert mase_scale(train, 1) == pytest.approx(2.25)
    y, f = np.array([5.0, 7.0]), np.array([4.0, 4.0])
    assert mase(y, f, train, 2) == pytest.approx(((1 + 3) / 2) / 2.0)
    two = np.stack([train, 10 * train], 1)  # per channel scales 2 and 20
    assert mase(np.array([[1.0, 10.0]]), np.array([[0.0, 0.0]]), two, 2) == pytest.approx(
        (1 / 2 + 10 / 20) / 2)
    assert mase_scale(np.ones(5), 1) == 1.0  # constant: no division by zero
    m = forecast_metrics(y, f, train, 2)
    assert m == pytest.approx({"mae": 2.0, "rmse": np.sqrt(5.0), "mase": 1.0,
                               "smape": (200 / 9 + 600 / 11) / 2})


def test_per_horizon_by_hand():
    y = np.array([[1.0, 2.0], [3.0, 4.0]])  # (origins, H)
    f = np.array([[1.0, 0.0], [2.0, 4.0]])
    out = per_horizon(y, f, np.array([0.0, 1.0, 2.0]), 1)  # scale 1
    np.testing.assert_allclose(out["mase"], [0.5, 1.0])
    np.testing.assert_allclose(out["smape"], [(0 + 200 / 5) / 2, (200 + 0) / 2])


def test_seasonal_naive_and_mean():
    h = np.array([1.0, 2.0, 3.0, 10.0, 20.0, 30.0])
    np.testing.assert_array_equal(seasonal_naive(h, 5, 3), [10, 20, 30, 10, 20])
    np.testing.assert_array_equal(seasonal_naive(h, 2, 1), [30, 30])
    np.testing.assert_array_equal(mean_forecast(h, 2), [11, 11])
    two = np.stack([h, -h], 1)
    np.testing.assert_array_equal(seasonal_naive(two, 1, 3), [[10, -10]])


def test_rolling_errors_see_only_the_past():
    series = np.arange(10.0)
    seen = []

    def last(history, horizon):
        seen.append(len(history))
        return np.repeat(history[-1], horizon)

    y, f = rolling_errors(series, [4, 6], 2, last)
    assert seen == [4, 6]
    np.testing.assert_array_equal(y, [[4, 5], [6, 7]])
    np.testing.assert_array_equal(f, [[3, 3], [5, 5]])


def test_statsmodels_baselines_on_known_series():
    t = np.arange(72)
    trend = 0.5 * t + 3.0  # a line: ARIMA(1,1,1) continues it
    np.testing.assert_allclose(arima_forecast(trend, 4, 1), 0.5 * np.arange(72, 76) + 3.0, atol=0.05)
    seasonal = np.tile([0.0, 2.0, 5.0, 1.0], 18) + 0.1 * t  # season 4 on a trend
    want = np.tile([0.0, 2.0, 5.0, 1.0], 2) + 0.1 * np.arange(72, 80)
    np.testing.assert_allclose(arima_forecast(seasonal, 8, 4), want, atol=0.1)
    np.testing.assert_allclose(stl_arima_forecast(seasonal, 8, 4), want, atol=0.3)


def test_plot_forecast(tmp_path):
    p = plot_forecast(["1", "2", "3"], np.array([[1.0, 2.0], [2.0, 3.0], [3.0, 4.0]]), ["4", "5"],
                      {"a": np.array([[4.0, 5.0], [5.0, 6.0]])}, tmp_path / "f.png",
                      truth=np.array([[4.0, 5.0], [5.0, 6.0]]), channel_names=["x", "y"])
    assert p.is_file() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
