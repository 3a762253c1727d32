"""Reading series CSVs, splits, the scaler and windows: values against hand-computed ones, and
no future value reaching a training input or the scaler."""

import numpy as np
import pytest

from lmforge.data.timeseries import (
    Scaler,
    fill_missing,
    future_times,
    make_windows,
    read_series_csv,
    rolling_origins,
    split_spans,
    window_starts,
)
from lmforge.errors import DataError


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_read_columns_and_time_column(tmp_path):
    f = write(tmp_path / "s.csv", "x,when,y\n1,2024-01-01,10\n2,2024-01-02,20.5\n\n3,2024-01-03,-1e1\n")
    s = read_series_csv(f, time_column="when")
    assert s.times == ["2024-01-01", "2024-01-02", "2024-01-03"] and s.columns == ["x", "y"]
    np.testing.assert_array_equal(s.values, [[1, 10], [2, 20.5], [3, -10]])
    only = read_series_csv(f, time_column="when", columns=["y"])
    np.testing.assert_array_equal(only.values, [[10], [20.5], [-10]])
    with pytest.raises(DataError, match="column 'when': '2024-01-01' is not a number"):
        read_series_csv(f)  # the first column ("x") is the time column by default


@pytest.mark.parametrize("text, where", [
    ("t,a\n1,2\n2,abc\n", ":3: column 'a': 'abc' is not a number"),
    ("t,a\n1,2\n2,\n", ":3: column 'a' has no value"),
    ("t,a\n1,2\n2,inf\n", ":3: column 'a': 'inf' is not a finite number"),
    ("t,a\n1,2\n1,3\n", ":3: time '1' repeats line 2"),
    ("t,a\n1,2,3\n", ":2: 3 cells, the header has 2"),
    ("t\n1\n", ":1: only a time column"),
    ("", "the file is empty"),
    ("t,a\n", "no data rows"),
])
def test_bad_rows_name_file_line_and_column(tmp_path, text, where):
    f = write(tmp_path / "bad.csv", text)
    with pytest.raises(DataError) as e:
        read_series_csv(f)
    assert where in str(e.value) and str(f) in str(e.value) and "\n" not in str(e.value)


def test_unknown_columns_are_named(tmp_path):
    f = write(tmp_path / "s.csv", "t,a\n1,2\n")
    with pytest.raises(DataError, match="no column 'b'"):
        read_series_csv(f, columns=["b"])
    with pytest.raises(DataError, match="no time column 'time'"):
        read_series_csv(f, time_column="time")


def test_missing_policies(tmp_path):
    f = write(tmp_path / "s.csv", "t,a,b\n1,1,NA\n2,,4\n3,,nan\n4,7,10\n")
    ffill = read_series_csv(f, missing="interpolate")
    # a: 1, (3), (5), 7 interpolated; b: leading gap takes the first value 4, then 4, (7), 10
    np.testing.assert_allclose(ffill.values, [[1, 4], [3, 4], [5, 7], [7, 10]])
    with pytest.raises(DataError, match="starts with missing values"):
        read_series_csv(f, missing="ffill")
    g = write(tmp_path / "g.csv", "t,a\n1,1\n2,\n3,\n4,7\n")
    np.testing.assert_array_equal(read_series_csv(g, missing="ffill").values[:, 0], [1, 1, 1, 7])


def test_ffill_uses_only_the_past():
    x = np.array([[1.0], [np.nan], [3.0]])
    y = x.copy()
    y[2] = 99.0  # a later value must not change the filled gap
    assert fill_missing(x, "ffill")[1, 0] == fill_missing(y, "ffill")[1, 0] == 1.0


def test_split_spans_by_hand():
    s = split_spans(100, 0.1, 0.2, context=10, horizon=5)
    assert (s.train_end, s.val_end, s.n) == (70, 80, 100)
    s = split_spans(100, 0.01, 0.0, context=10, horizon=5)  # a non-empty span holds >= horizon
    assert (s.train_end, s.val_end) == (95, 100)
    with pytest.raises(DataError, match="shorter than one window"):
        split_spans(20, 0.1, 0.2, context=10, horizon=5)


def test_scaler_per_channel():
    x = np.array([[1.0, 5.0], [3.0, 5.0]])
    sc = Scaler.fit(x)
    np.testing.assert_array_equal(sc.mean, [2.0, 5.0])
    np.testing.assert_array_equal(sc.std, [1.0, 1.0])  # constant channel: std 1, not 0
    np.testing.assert_array_equal(sc.transform(x), [[-1, 0], [1, 0]])
    np.testing.assert_allclose(sc.inverse(sc.transform(x)), x)
    assert Scaler.from_dict(sc.to_dict()).to_dict() == sc.to_dict()


def test_windows_by_hand():
    v = np.arange(10.0)[:, None]  # (10, 1)
    starts = window_starts(context=3, horizon=2, start=0, end=7)
    assert starts.tolist() == [3, 4, 5]  # targets [t, t+2) inside [0, 7)
    x, y = make_windows(v, starts, 3, 2)
    assert x[0, :, 0].tolist() == [0, 1, 2] and y[0, :, 0].tolist() == [3, 4]
    assert x[-1, :, 0].tolist() == [2, 3, 4] and y[-1, :, 0].tolist() == [5, 6]
    assert window_starts(3, 2, 7, 10).tolist() == [7, 8]


def test_no_future_leaks_into_training_inputs_or_scaler():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(200, 3))
    spans = split_spans(200, 0.1, 0.2, context=16, horizon=8)
    changed = values.copy()
    changed[spans.train_end:] = rng.normal(size=changed[spans.train_end:].shape) * 50 + 7
    scale_a = Scaler.fit(values[:spans.train_end])
    scale_b = Scaler.fit(changed[:spans.train_end])
    assert scale_a.to_dict() == scale_b.to_dict()
    starts = window_starts(16, 8, 0, spans.train_end)
    assert starts.max() + 8 <= spans.train_end  # every training target inside the span
    xa, ya = make_windows(scale_a.transform(values), starts, 16, 8)
    xb, yb = make_windows(scale_b.transform(changed), starts, 16, 8)
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
    # validation windows: inputs reach back, targets stay inside the validation span
    val = window_starts(16, 8, spans.train_end, spans.val_end)
    assert val.min() == spans.train_end and val.max() + 8 <= spans.val_end


def test_rolling_origins():
    assert rolling_origins(10, 20, 3) == list(range(10, 18))
    assert rolling_origins(10, 20, 3, n_origins=3) == [10, 14, 17]
    assert rolling_origins(0, 10, 3, min_history=5) == [5, 6, 7]
    assert rolling_origins(10, 12, 3) == []


def test_future_times():
    assert future_times(["1", "3"], 2) == ["5", "7"]
    assert future_times(["1.5", "2.0"], 2) == ["2.5", "3"]
    assert future_times(["2024-01-01", "2024-01-08"], 2) == ["2024-01-15", "2024-01-22"]
    assert future_times(["a", "b"], 2) == ["+1", "+2"]
