"""`lmforge train` (task = "forecast") and `lmforge forecast` end to end on a tiny CSV, and the
one-line exit-2 messages for bad input."""

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lmforge.cli.main import main
from lmforge.tasks.forecast_predict import load_forecaster


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, np.ndarray]:
    root = tmp_path_factory.mktemp("fc")
    t = np.arange(160)
    values = np.round(np.sin(2 * np.pi * t / 10) + 0.02 * t, 6)
    data = root / "series.csv"
    data.write_text("date,load\n" + "".join(
        f"{np.datetime64('2024-01-01') + i},{v:.6f}\n" for i, v in zip(t, values)))
    cfg = root / "fc.toml"
    cfg.write_text(
        f'out_dir = "{root / "model"}"\ntask = "forecast"\nseed = 1\n'
        '[model]\narch = "patchtst"\nd_model = 16\nn_layer = 1\nn_head = 2\n'
        f'[data]\npath = "{data}"\n'
        "[forecast]\ncontext = 20\nhorizon = 5\npatch_len = 5\nstride = 5\nseason = 10\n"
        "eval_origins = 4\n"
        "[train]\nmax_steps = 10\nbatch_size = 16\nwarmup_steps = 2\neval_every = 5\n"
        "checkpoint_every = 10\nprogress = false\ndtype = \"float32\"\n", encoding="utf-8")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["train", str(cfg)]) == 0
    finally:
        torch.set_num_threads(n)
    return root / "model", data, values


def run(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_forecast_end_to_end(trained, tmp_path):
    model, data, values = trained
    out, plot, js = tmp_path / "f.csv", tmp_path / "f.png", tmp_path / "f.json"
    code, printed, _ = run(["forecast", str(model), "--data", str(data), "--horizon", "3",
                            "--out", str(out), "--plot", str(plot), "--json", str(js)])
    assert code == 0
    rows = out.read_text().splitlines()
    assert rows[0] == "date,load" and printed.strip().splitlines() == rows
    assert [r.split(",")[0] for r in rows[1:]] == ["2024-06-09", "2024-06-10", "2024-06-11"]
    want = load_forecaster(model).predict(values[:, None], 3)[:, 0]  # (3,)
    np.testing.assert_allclose([float(r.split(",")[1]) for r in rows[1:]], want, rtol=1e-5)
    assert json.loads(js.read_text())["horizon"] == 3
    assert plot.read_bytes()[:4] == b"\x89PNG"
    code, _, err = run(["forecast", str(model), "--data", str(data), "--out", str(out)])
    assert code == 2 and "already exists" in err and "--overwrite" in err


def test_longer_horizon_is_refused(trained):
    model, data, _ = trained
    code, _, err = run(["forecast", str(model), "--data", str(data), "--horizon", "6"])
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "forecasts 1 to 5 steps" in err and "forecast.horizon = 6" in err


@pytest.mark.parametrize("text, message", [
    ("date,load\n2024-01-01,1\n2024-01-02,oops\n", ":3: column 'load': 'oops' is not a number"),
    ("date,other\n2024-01-01,1\n", "no column 'load'"),
    ("date,load\n2024-01-01,\n", ":2: column 'load' has no value"),
    ("", "the file is empty"),
    ("date,load\n2024-01-01,1\n", "has 1 steps; this model needs the last 20"),
])
def test_bad_csv_exits_2_with_one_line(trained, tmp_path, text, message):
    model, _, _ = trained
    bad = tmp_path / "bad.csv"
    bad.write_text(text)
    code, _, err = run(["forecast", str(model), "--data", str(bad)])
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err


def test_bad_training_csv_exits_2(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("t,a\n1,2\n2,x\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'out_dir = "{tmp_path / "m"}"\ntask = "forecast"\n[model]\narch = "lstm_forecaster"\n'
                   f'[data]\npath = "{bad}"\n')
    code, _, err = run(["train", str(cfg)])
    assert code == 2 and len(err.strip().splitlines()) == 1 and ":3: column 'a'" in err


def test_not_a_forecaster(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"arch": "decoder", "vocab_size": 10}))
    code, _, err = run(["forecast", str(d), "--data", str(tmp_path / "x.csv")])
    assert code == 2 and "not a forecaster" in err
