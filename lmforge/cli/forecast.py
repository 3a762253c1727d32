"""``lmforge forecast MODEL_DIR --data series.csv --horizon H``: the next H steps after the
end of a series, from a model trained with ``task = "forecast"`` (docs/forecasting.md).

The CSV must have the model's time column and value columns (other columns are ignored);
its last ``context`` rows are the input. A horizon longer than the trained one is refused.
"""

from __future__ import annotations

import argparse
import csv
import io

import numpy as np

from ..data.timeseries import future_times, read_series_csv
from ..errors import ConfigError
from ..evaluation.forecasting import plot_forecast
from ..files.atomic import atomic_write_text
from ..files.guard import check_output
from ..tasks.forecast_predict import check_horizon, load_forecaster
from .arguments import positive_int
from .output import say, write_json
from .registry import Command


def forecast(model_dir: str, data: str, horizon: int | None = None, out: str | None = None,
             plot: str | None = None, overwrite: bool = False, device: str = "cpu") -> dict:
    """Forecast ``horizon`` steps (default: the trained horizon) after the end of ``data``;
    writes a CSV (``out``: time column + one column per channel) and a plot when asked."""
    for path in (out, plot):
        if path:
            check_output(path, [model_dir, data], overwrite, kind="file")
    f = load_forecaster(model_dir, device)
    H = f.horizon if horizon is None else horizon
    check_horizon(H, f.horizon)
    series = read_series_csv(data, f.time_column, f.columns, f.info.get("missing", "error"))
    pred = f.predict(series.values, H)  # (H, C)
    times = future_times(series.times, H)
    text = io.StringIO()
    w = csv.writer(text, lineterminator="\n")
    w.writerow([f.time_column or "time", *f.columns])
    for t, row in zip(times, pred):
        w.writerow([t, *(f"{v:.6g}" for v in row)])
    say(text.getvalue().rstrip("\n"))
    if out:
        atomic_write_text(out, text.getvalue())
    if plot:
        shown = min(len(series.values), 4 * f.context)
        plot_forecast(series.times[-shown:], series.values[-shown:], times, {"forecast": pred},
                      plot, title=f"forecast from {model_dir}", channel_names=f.columns)
    return {"model_dir": str(model_dir), "data": str(data), "horizon": H, "times": times,
            "columns": f.columns, "forecast": np.asarray(pred).tolist()}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir")
    p.add_argument("--data", required=True, help="the series: a CSV with the model's time and "
                   "value columns; the forecast starts after its last row")
    p.add_argument("--horizon", type=positive_int, default=None,
                   help="steps to forecast (default and maximum: the trained horizon)")
    p.add_argument("--out", help="write the forecast here as CSV")
    p.add_argument("--plot", help="write a PNG of the recent history and the forecast")
    p.add_argument("--json", help="write the result as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out/--plot")
    p.add_argument("--device", default="cpu")


def run(args: argparse.Namespace) -> None:
    if args.out and args.plot and args.out == args.plot:
        raise ConfigError("--out and --plot name the same file; give two paths")
    result = forecast(args.model_dir, args.data, args.horizon, args.out, args.plot,
                      args.overwrite, args.device)
    write_json(result, args.json)


COMMANDS = [Command("forecast", "forecast the steps after a series with a model trained by "
                    "task = \"forecast\"", add_arguments, run)]
