"""Learning-rate schedules: warmup, then cosine / linear / constant / inverse square root."""

import math

import pytest

from lmforge.training import lr_at


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant", "inverse_sqrt"])
def test_warmup_is_linear_and_peaks_at_lr(schedule):
    kw = dict(lr=1e-3, min_lr=1e-5, warmup_steps=100, max_steps=1000, schedule=schedule)
    assert lr_at(0, **kw) == pytest.approx(1e-5)
    assert lr_at(49, **kw) == pytest.approx(5e-4)
    assert lr_at(99, **kw) == pytest.approx(1e-3)


def test_decays():
    kw = dict(lr=1e-3, min_lr=1e-5, warmup_steps=100, max_steps=1000)
    assert lr_at(1000, **kw, schedule="cosine") == pytest.approx(1e-5)
    assert lr_at(550, **kw, schedule="linear") == pytest.approx((1e-3 + 1e-5) / 2)
    assert lr_at(700, **kw, schedule="constant") == 1e-3
    # the original Transformer's: lr * sqrt(warmup / step) after warmup, no floor
    assert lr_at(399, **kw, schedule="inverse_sqrt") == pytest.approx(5e-4)
    assert lr_at(9999, **kw, schedule="inverse_sqrt") == pytest.approx(1e-3 * math.sqrt(100 / 10000))
