"""Forecasting on three classic series bundled with statsmodels (offline): rolling-origin
MASE and sMAPE per horizon for the seasonal naive forecast, SARIMAX, STL+ARIMA, the LSTM
forecaster and the two Transformer forecasters (patchtst, timestep).

Series (statsmodels.datasets):
  co2       Mauna Loa CO2, weekly 1958-2001 -> monthly means (526 steps; the few empty
            months forward-filled), season 12, context 48, horizon 12
  sunspots  yearly sunspot numbers 1700-2008 (309 steps), season 11, context 44, horizon 11
  elnino    monthly sea surface temperature 1950-2010 (732 steps), season 12, context 48,
            horizon 12

Each series is split in time order: train 70% / val 10% / test 20% (the task's defaults).
The neural forecasters are trained by ``lmforge.tasks.train_task`` (task = "forecast") on the
training span (scaler fitted there; val loss logged); every method is then scored at the same
--origins rolling origins spread over the test span, each forecast seeing only the steps
before its origin (the classical ones are refitted at each origin on all of them). MASE is
scaled by the seasonal naive in-sample MAE on the training span.

    python bench/forecast.py                       # ~6-8 min on 2 CPU cores
    python bench/forecast.py --tiny                # smoke test (< 1 min)
    python bench/forecast.py --datasets co2 --steps 300 --origins 6

Writes bench/results/forecast.{md,json} and forecast_<series>.png (--out-dir)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, table  # noqa: E402
from lmforge.data.timeseries import fill_missing, rolling_origins, split_spans  # noqa: E402
from lmforge.evaluation.forecasting import (  # noqa: E402
    BASELINES,
    per_horizon,
    plot_forecast,
    rolling_errors,
)
from lmforge.tasks import RunConfig, train_task  # noqa: E402
from lmforge.tasks.forecast_predict import load_forecaster  # noqa: E402

SETTINGS = {"co2": dict(season=12, context=48, horizon=12),
            "sunspots": dict(season=11, context=44, horizon=11),
            "elnino": dict(season=12, context=48, horizon=12)}
NEURAL = {"lstm": ("lstm_forecaster", {"model.d_model": 32, "model.n_layer": 1, "model.n_head": 4}),
          "patchtst": ("patchtst", {"model.d_model": 32, "model.n_layer": 2, "model.n_head": 4,
                                    "forecast.patch_len": 8, "forecast.stride": 4}),
          "timestep": ("timestep", {"model.d_model": 32, "model.n_layer": 2, "model.n_head": 4})}
CLASSICAL = ("seasonal_naive", "sarimax", "stl_arima")


def load_series(name: str) -> tuple[list[str], np.ndarray]:
    """(time labels, values (T,)) of a statsmodels dataset."""
    from statsmodels import datasets

    if name == "co2":
        df = datasets.co2.load_pandas().data.resample("MS").mean()
        values = fill_missing(df["co2"].to_numpy()[:, None], "ffill", "co2")[:, 0]
        return [d.strftime("%Y-%m") for d in df.index], values
    if name == "sunspots":
        df = datasets.sunspots.load_pandas().data
        return [str(int(y)) for y in df["YEAR"]], df["SUNACTIVITY"].to_numpy(dtype=float)
    df = datasets.elnino.load_pandas().data
    months = df.columns[1:]
    times = [f"{int(y)}-{m + 1:02d}" for y in df["YEAR"] for m in range(len(months))]
    return times, df[months].to_numpy(dtype=float).reshape(-1)


def train_neural(name: str, arch: str, extra: dict, csv: Path, out: Path, s: dict, args) -> Path:
    sets = {"out_dir": str(out), "task": "forecast", "seed": args.seed, "model.arch": arch,
            "data.path": str(csv), "forecast.context": s["context"], "forecast.horizon": s["horizon"],
            "forecast.season": s["season"], "forecast.eval_origins": args.origins,
            "train.max_steps": args.steps, "train.batch_size": 32, "train.lr": 2e-3,
            "train.warmup_steps": max(1, args.steps // 20), "train.weight_decay": 0.01,
            "train.eval_every": max(1, args.steps // 4), "train.checkpoint_every": args.steps,
            "train.progress": False, "train.dtype": "float32", "train.log_every": 10**6, **extra}
    if args.tiny:
        sets.update({"model.d_model": 8, "model.n_layer": 1, "model.n_head": 2})
    cfg = RunConfig.load(overrides=[f"{k}={json.dumps(v)}" for k, v in sets.items()])
    train_task(cfg)
    return out


def bench_series(name: str, args, work: Path) -> tuple[dict, dict]:
    """Per-horizon MASE/sMAPE of every method on one series; and the last origin's forecasts."""
    s = SETTINGS[name]
    times, y = load_series(name)
    H, m = s["horizon"], s["season"]
    spans = split_spans(len(y), 0.1, 0.2, s["context"], H)
    origins = rolling_origins(spans.val_end, spans.n, H, args.origins, min_history=s["context"])
    train = y[:spans.train_end]
    csv = work / f"{name}.csv"
    csv.write_text("time,value\n" + "".join(f"{t},{float(v)!r}\n" for t, v in zip(times, y)))
    results, last = {}, {}
    for method in args.methods:
        t0 = time.perf_counter()
        if method in CLASSICAL:
            fn = BASELINES[method]
            truth, pred = rolling_errors(y, origins, H, lambda h, k, fn=fn: fn(h, k, m))
        else:
            arch, extra = NEURAL[method]
            f = load_forecaster(train_neural(name, arch, extra, csv, work / f"{name}-{method}", s, args))
            windows = np.stack([y[t - s["context"]:t] for t in origins])[..., None]
            truth = np.stack([y[t:t + H] for t in origins])
            pred = f.predict_windows(windows)[..., 0]
        scores = per_horizon(truth, pred, train, m)
        results[method] = {"mase": scores["mase"].tolist(), "smape": scores["smape"].tolist(),
                           "seconds": round(time.perf_counter() - t0, 1)}
        last[method] = pred[-1]
        print(f"  {name:<9} {method:<15} MASE {scores['mase'].mean():.3f}  "
              f"sMAPE {scores['smape'].mean():6.2f}  ({results[method]['seconds']} s)", flush=True)
    t = origins[-1]
    shown = max(0, t - 4 * s["context"])
    plot_forecast(times[shown:t], y[shown:t], times[t:t + H], last,
                  Path(args.out_dir) / f"forecast_{name}{'_tiny' if args.tiny else ''}.png",
                  truth=y[t:t + H],
                  title=f"{name}: last test origin")
    return {"origins": len(origins), "horizon": H, "season": m, "steps": len(y),
            "train_end": spans.train_end, "methods": results}, last


def report(all_results: dict, args) -> str:
    rows = []
    for name, r in all_results.items():
        H = r["horizon"]
        for method, sc in r["methods"].items():
            mase, sm = np.array(sc["mase"]), np.array(sc["smape"])
            rows.append([name, method, f"{mase.mean():.3f}", f"{mase[0]:.3f}", f"{mase[H // 2 - 1]:.3f}",
                         f"{mase[-1]:.3f}", f"{sm.mean():.2f}", f"{sm[0]:.2f}", f"{sm[-1]:.2f}",
                         sc["seconds"]])
    head = ["series", "method", "MASE", "h=1", "h=H/2", "h=H", "sMAPE %", "h=1", "h=H", "s"]
    return (f"{machine()}; {args.origins} rolling origins per series, neural: {args.steps} steps\n\n"
            + table(head, rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="co2,sunspots,elnino")
    ap.add_argument("--methods", default=",".join([*CLASSICAL, *NEURAL]))
    ap.add_argument("--steps", type=int, default=600, help="training steps per neural model")
    ap.add_argument("--origins", type=int, default=12, help="rolling origins over the test span")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: these tiny models gain nothing from more)")
    ap.add_argument("--tiny", action="store_true", help="smoke test: 20 steps, 2 origins, tiny models")
    ap.add_argument("--out-dir", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.tiny:
        args.steps, args.origins = 20, 2
    args.methods = args.methods.split(",")
    unknown = [x for x in args.methods if x not in CLASSICAL and x not in NEURAL]
    if unknown:
        ap.error(f"unknown method {unknown[0]!r}; choose from {', '.join([*CLASSICAL, *NEURAL])}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets.split(","):
            results[name], _ = bench_series(name, args, Path(tmp))
    text = report(results, args)
    print("\n" + text)
    out = Path(args.out_dir)
    suffix = "_tiny" if args.tiny else ""
    (out / f"forecast{suffix}.md").write_text(text + "\n")
    (out / f"forecast{suffix}.json").write_text(json.dumps(results, indent=1))
    print(f"\nwrote {out}/forecast{suffix}.md, .json and forecast_<series>.png")


if __name__ == "__main__":
    main()
