"""Time series for forecasting: a CSV of a time column and value columns, read into a
(T, C) array; chronological splits; a per-channel scaler fitted on the training span only;
(context, horizon) windows; rolling-origin evaluation points.

The CSV::

    time,load,temp          # a header row; the time column is the first one unless named
    2024-01-01,12.5,3.1     # rows in time order (a time that repeats is refused)
    2024-01-02,,2.8         # an empty / NA / nan cell is a missing value (see ``missing``)

Missing values, by the ``missing`` policy:

* ``"error"`` (the default): refused, the file, line and column named;
* ``"ffill"``: the last observed value of that column is carried forward (only the past is
  used, so no future value leaks in); missing values before a column's first observation are
  refused;
* ``"interpolate"``: linear interpolation between the observations either side (a gap uses
  the next observation, i.e. a little of its future: use ``ffill`` where that matters);
  gaps at the ends take the nearest observation.

Nothing here looks past the training span when fitting: :func:`split_spans` cuts the series
in time order, :meth:`Scaler.fit` reads only ``values[:train_end]``, and :func:`window_starts`
gives windows whose targets lie inside the span asked for and whose inputs lie before their
targets (tests/data/test_timeseries.py checks that changing later values changes neither).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from ..errors import DataError

MISSING_POLICIES = ("error", "ffill", "interpolate")
MISSING_CELLS = {"", "na", "nan", "null", "none", "n/a", "?"}
"""Cells (lower-cased, stripped) that mean "no value"."""


@dataclass
class Series:
    """A multichannel series read from a CSV."""

    times: list[str]
    """The time column's cells, as written."""
    values: np.ndarray
    """(T, C) float64 values, one column per channel, missing values filled by the policy."""
    columns: list[str]
    """The channel names (value columns), in ``values`` column order."""
    time_column: str
    """Name of the time column."""
    path: str = ""


def _parse_header(path: Path, header: list[str], time_column: str,
                  columns: list[str]) -> tuple[int, list[int]]:
    """(index of the time column, indices of the value columns) in ``header``."""
    header = [h.strip() for h in header]
    if len(set(header)) != len(header):
        raise DataError(f"{path}:1: the header repeats a column name ({header}); names must be unique")
    tcol = time_column or header[0]
    if tcol not in header:
        raise DataError(f"{path}:1: no time column {tcol!r} (columns: {', '.join(header)}); "
                        "set forecast.time_column to one of them")
    want = list(columns) or [h for h in header if h != tcol]
    missing = [c for c in want if c not in header]
    if missing:
        raise DataError(f"{path}:1: no column {missing[0]!r} (columns: {', '.join(header)}); "
                        "fix forecast.columns")
    if not want:
        raise DataError(f"{path}:1: only a time column; a series needs at least one value column")
    return header.index(tcol), [header.index(c) for c in want]


def read_series_csv(path: str | Path, time_column: str = "", columns: list[str] | None = None,
                    missing: str = "error") -> Series:
    """Read ``path`` (a header row, then one row per time step, in time order).

    ``time_column`` "" = the first column; ``columns`` None/[] = every other column;
    ``missing``: see the module docstring. A bad cell raises DataError naming the file, the
    line and the column."""
    path = Path(path)
    if missing not in MISSING_POLICIES:
        raise DataError(f"missing: {missing!r} is not a policy; choose one of {', '.join(MISSING_POLICIES)}")
    if not path.is_file():
        raise DataError(f"{path}: no such file; give a CSV with a time column and value columns")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: not a readable UTF-8 CSV ({e})") from None
    if not rows:
        raise DataError(f"{path}: the file is empty; it needs a header row and data rows")
    ti, vi = _parse_header(path, rows[0], time_column, columns or [])
    header = [h.strip() for h in rows[0]]
    times, values, seen = [], [], {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue  # blank line
        if len(row) != len(header):
            raise DataError(f"{path}:{line}: {len(row)} cells, the header has {len(header)}")
        t = row[ti].strip()
        if t in seen:
            raise DataError(f"{path}:{line}: time {t!r} repeats line {seen[t]}; one row per time step")
        seen[t] = line
        times.append(t)
        values.append([_cell(path, line, header[j], row[j], missing) for j in vi])
    if not times:
        raise DataError(f"{path}: no data rows after the header")
    arr = np.array(values, dtype=np.float64)  # (T, C), NaN = missing
    names = [header[j] for j in vi]
    return Series(times, fill_missing(arr, missing, str(path), names), names, header[ti], str(path))


def _cell(path: Path, line: int, column: str, text: str, missing: str) -> float:
    s = text.strip()
    if s.lower() in MISSING_CELLS:
        if missing == "error":
            raise DataError(f"{path}:{line}: column {column!r} has no value; fill it, or set "
                            "forecast.missing = \"ffill\" or \"interpolate\"")
        return math.nan
    try:
        v = float(s)
    except ValueError:
        raise DataError(f"{path}:{line}: column {column!r}: {s!r} is not a number") from None
    if not math.isfinite(v):
        raise DataError(f"{path}:{line}: column {column!r}: {s!r} is not a finite number")
    return v


def fill_missing(values: np.ndarray, missing: str, where: str = "series",
                 columns: list[str] | None = None) -> np.ndarray:
    """``values`` (T, C) with NaNs filled by the ``missing`` policy (a copy)."""
    out = np.array(values, dtype=np.float64)
    for c in range(out.shape[1]):
        col, name = out[:, c], (columns[c] if columns else str(c))
        bad = np.isnan(col)
        if not bad.any():
            continue
        if bad.all():
            raise DataError(f"{where}: column {name!r} has no values at all")
        if missing == "error":
            raise DataError(f"{where}: column {name!r} has missing values at rows "
                            f"{np.flatnonzero(bad)[:5].tolist()}; fill them or choose a policy")
        idx = np.arange(len(col))
        if missing == "ffill":
            if bad[0]:
                raise DataError(f"{where}: column {name!r} starts with missing values, which "
                                "ffill cannot fill; drop those rows or use \"interpolate\"")
            last = np.maximum.accumulate(np.where(bad, 0, idx))  # index of the last observation
            out[:, c] = col[last]
        else:
            out[:, c] = np.interp(idx, idx[~bad], col[~bad])
    return out


@dataclass(frozen=True)
class Spans:
    """A chronological split: train = [0, train_end), val = [train_end, val_end),
    test = [val_end, n)."""

    train_end: int
    val_end: int
    n: int


def split_spans(n: int, val_fraction: float, test_fraction: float, context: int,
                horizon: int) -> Spans:
    """Cut ``n`` steps in time order. The training span must hold at least one window
    (context + horizon steps); val/test spans of a non-zero fraction hold at least ``horizon``
    steps (their windows' inputs reach back into the earlier spans)."""
    n_test = math.ceil(n * test_fraction) if test_fraction > 0 else 0
    n_val = math.ceil(n * val_fraction) if val_fraction > 0 else 0
    n_test = max(n_test, horizon) if n_test else 0
    n_val = max(n_val, horizon) if n_val else 0
    train_end = n - n_val - n_test
    if train_end < context + horizon:
        raise DataError(f"the series has {n} steps: after holding out {n_val} (val) and "
                        f"{n_test} (test) the training span ({train_end}) is shorter than one "
                        f"window (context {context} + horizon {horizon}); use a longer series, "
                        "smaller fractions, or a shorter context/horizon")
    return Spans(train_end, train_end + n_val, n)


@dataclass
class Scaler:
    """Per-channel standardisation: (x - mean) / std, fitted on the training span only."""

    mean: np.ndarray
    """(C,) channel means over the training span."""
    std: np.ndarray
    """(C,) channel standard deviations over the training span (1 where a channel is constant)."""

    @classmethod
    def fit(cls, train_values: np.ndarray) -> Scaler:
        """Fit on ``train_values`` (T_train, C): pass ``values[:spans.train_end]``, nothing later."""
        mean = train_values.mean(0)
        std = train_values.std(0)
        return cls(mean, np.where(std > 1e-12, std, 1.0))

    def transform(self, x: np.ndarray) -> np.ndarray:  # (..., C) -> (..., C)
        return (x - self.mean) / self.std

    def inverse(self, x: np.ndarray) -> np.ndarray:  # (..., C) -> (..., C)
        return x * self.std + self.mean

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> Scaler:
        return cls(np.asarray(d["mean"], dtype=np.float64), np.asarray(d["std"], dtype=np.float64))


def window_starts(context: int, horizon: int, start: int, end: int, step: int = 1) -> np.ndarray:
    """Forecast origins t (the first target step) whose targets ``[t, t + horizon)`` lie in
    ``[start, end)`` and whose inputs ``[t - context, t)`` lie in ``[0, t)``: t runs from
    max(start, context) to end - horizon, every ``step`` steps."""
    first = max(start, context)
    return np.arange(first, end - horizon + 1, step, dtype=np.int64)


def make_windows(values: np.ndarray, origins: np.ndarray, context: int,
                 horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs (N, context, C), targets (N, horizon, C)) at each origin t:
    inputs = values[t - context : t], targets = values[t : t + horizon]."""
    if len(origins) == 0:
        C = values.shape[1]
        return np.zeros((0, context, C)), np.zeros((0, horizon, C))
    x = np.stack([values[t - context:t] for t in origins])
    y = np.stack([values[t:t + horizon] for t in origins])
    return x, y


def rolling_origins(start: int, end: int, horizon: int, n_origins: int = 0,
                    min_history: int = 1) -> list[int]:
    """Rolling-origin evaluation points in ``[start, end)``: each origin t forecasts
    ``[t, t + horizon)`` from the history ``[0, t)``. ``n_origins`` > 0 spreads that many
    evenly (the last one as late as the span allows); 0 = every step."""
    first, last = max(start, min_history), end - horizon
    if last < first:
        return []
    every = list(range(first, last + 1))
    if n_origins <= 0 or n_origins >= len(every):
        return every
    idx = np.linspace(0, len(every) - 1, n_origins).round().astype(int)
    return [every[i] for i in sorted(set(idx.tolist()))]


def future_times(times: list[str], horizon: int) -> list[str]:
    """Labels for the ``horizon`` steps after ``times``: continued at the last step's spacing
    when the times are numbers or ISO dates/datetimes, else ``+1``, ``+2``, ..."""
    if len(times) >= 2:
        try:
            a, b = float(times[-2]), float(times[-1])
            d = b - a
            as_int = all(t.lstrip("-").isdigit() for t in times[-2:])
            return [str(int(b + k * d)) if as_int else f"{b + k * d:g}" for k in range(1, horizon + 1)]
        except ValueError:
            pass
        try:
            a, b = datetime.fromisoformat(times[-2]), datetime.fromisoformat(times[-1])
            d = b - a
            date_only = len(times[-1]) == 10
            return [(b + k * d).date().isoformat() if date_only else (b + k * d).isoformat()
                    for k in range(1, horizon + 1)]
        except ValueError:
            pass
    return [f"+{k}" for k in range(1, horizon + 1)]
