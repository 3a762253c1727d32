"""``task = "forecast"`` through the shared driver: the model directory (no tokenizer, the
scaler fitted on the training span in meta.json), loading it back, the test scores
recomputed by hand, and refusals of bad configs."""

import json

import numpy as np
import pytest
import torch

from lmforge.data.timeseries import Scaler, make_windows, rolling_origins
from lmforge.errors import ConfigError
from lmforge.evaluation.forecasting import forecast_metrics, seasonal_naive
from lmforge.tasks import RunConfig, train_task
from lmforge.tasks.forecast import forecast_loss
from lmforge.tasks.forecast_config import ForecastConfig
from lmforge.tasks.forecast_predict import load_forecaster


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def sine_csv(path, n=240):
    t = np.arange(n)
    a = np.round(np.sin(2 * np.pi * t / 12), 6)  # as written: 6 decimals
    b = np.round(5 + np.cos(2 * np.pi * t / 8) + 0.01 * t, 6)
    path.write_text("step,a,b\n" + "".join(f"{i},{x:.6f},{y:.6f}\n" for i, x, y in zip(t, a, b)))
    return path, np.stack([a, b], 1)


def config(tmp_path, arch="patchtst", steps=12, **forecast):
    f, values = sine_csv(tmp_path / "s.csv")
    fc = {"context": 24, "horizon": 6, "patch_len": 6, "stride": 3, "season": 12,
          "eval_origins": 5, **forecast}
    cfg = RunConfig.load(overrides=[
        f'out_dir="{tmp_path / "model"}"', 'task="forecast"', f'model.arch="{arch}"',
        "model.d_model=16", "model.n_layer=1", "model.n_head=2", f'data.path="{f}"',
        f"train.max_steps={steps}", "train.batch_size=16", "train.warmup_steps=2",
        "train.eval_every=6", f"train.checkpoint_every={steps}", "train.progress=false",
        'train.dtype="float32"', *(f"forecast.{k}={json.dumps(v)}" for k, v in fc.items())])
    return cfg, values


@pytest.mark.parametrize("arch", ["patchtst", "timestep", "lstm_forecaster"])
def test_train_save_load_and_test_scores(tmp_path, arch):
    cfg, values = config(tmp_path, arch)
    run = train_task(cfg)
    out = tmp_path / "model"
    assert not (out / "tokenizer.json").exists() and (out / "model.safetensors").is_file()
    meta = json.loads((out / "meta.json").read_text())
    info = meta["forecast"]
    assert info["columns"] == ["a", "b"] and info["time_column"] == "step"
    assert (info["train_end"], info["val_end"], info["n"]) == (168, 192, 240)
    want = Scaler.fit(values[:168])  # the training span only
    np.testing.assert_allclose(info["scaler"]["mean"], want.mean, atol=1e-12)
    np.testing.assert_allclose(info["scaler"]["std"], want.std)
    f = load_forecaster(out)
    assert (f.context, f.horizon, f.columns) == (24, 6, ["a", "b"])
    for p, q in zip(f.model.parameters(), run.model.parameters()):
        torch.testing.assert_close(p, q.cpu())
    # the test scores, recomputed: 5 rolling origins over [192, 240), data units
    origins = rolling_origins(192, 240, 6, 5, min_history=24)
    x, y = make_windows(values, np.asarray(origins), 24, 6)
    with torch.no_grad():
        scaled = torch.tensor(want.transform(x), dtype=torch.float32)
        pred = want.inverse(f.model(scaled).double().numpy())
    naive = np.stack([seasonal_naive(values[:t], 6, 12) for t in origins])
    ours, base = forecast_metrics(y, pred, values[:168], 12), forecast_metrics(y, naive, values[:168], 12)
    assert run.metrics["test_mase"] == pytest.approx(ours["mase"], rel=1e-4)
    assert run.metrics["naive_mase"] == pytest.approx(base["mase"], rel=1e-6)
    assert meta["eval"]["test"]["origins"] == 5
    np.testing.assert_allclose(f.predict(values[:100]), f.predict_windows(values[None, 76:100])[0])


def test_training_batches_stay_in_the_training_span(tmp_path):
    cfg, values = config(tmp_path)
    from lmforge.tasks.driver import RunState
    from lmforge.tasks.forecast import ForecastTask
    task = ForecastTask()
    run = RunState(cfg, tmp_path, False, task)
    data = task.prepare(run)
    scaler = run.state["scaler"]
    train_scaled = scaler.transform(values[:168])
    for step in range(20):
        x, y = data.train_batch(step, 0, 0)
        window = torch.cat([x, y], 1).numpy()  # (B, 30, 2): each a run of the training span
        for w in window:
            hits = [o for o in range(168 - 30 + 1) if np.allclose(train_scaled[o:o + 30], w, atol=1e-5)]
            assert hits
    x1, _ = data.train_batch(3, 0, 0)
    x2, _ = data.train_batch(3, 0, 0)
    torch.testing.assert_close(x1, x2)  # a pure function of (step, micro, rank)
    vx, vy = next(iter(data.eval_batches()))  # validation: targets from step 168 on
    np.testing.assert_allclose(vy[0].numpy(), scaler.transform(values[168:174]), atol=1e-5)
    np.testing.assert_allclose(vx[0].numpy(), scaler.transform(values[144:168]), atol=1e-5)
    zero = lambda x: torch.zeros(len(x), 6, 2)  # noqa: E731
    torch.testing.assert_close(forecast_loss(zero, (vx, vy)), (vy ** 2).mean())


def test_bad_configs(tmp_path):
    with pytest.raises(ConfigError, match="forecast.horizon"):
        ForecastConfig(horizon=0)
    with pytest.raises(ConfigError, match="must stay below 0.9"):
        ForecastConfig(val_fraction=0.5, test_fraction=0.5)
    cfg, _ = config(tmp_path)
    cfg.model.arch = "decoder"
    with pytest.raises(ConfigError, match="task = 'forecast' trains model.arch"):
        train_task(cfg)
    cfg, _ = config(tmp_path, patch_len=40)
    with pytest.raises(ConfigError, match="patch_len"):
        train_task(cfg)


def test_resume_is_exact_and_checks_the_forecast_table(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    full, _ = config(tmp_path / "a", "lstm_forecaster", steps=8)
    full.train.checkpoint_every = 4
    whole = train_task(full)
    cut, _ = config(tmp_path / "b", "lstm_forecaster", steps=8)
    cut.train.checkpoint_every = 4
    train_task(cut, stop_at=4)
    changed, _ = config(tmp_path / "b", "lstm_forecaster", steps=8, horizon=4)
    with pytest.raises(ConfigError, match="forecast.horizon differs"):
        train_task(changed, resume=True)
    again, _ = config(tmp_path / "b", "lstm_forecaster", steps=8)
    again.train.checkpoint_every = 4
    resumed = train_task(again, resume=True)
    for p, q in zip(whole.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(p, q)
