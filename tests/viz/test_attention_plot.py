"""Attention heatmaps: valid PNGs for (H, Tq, Tk) and (Tq, Tk) weights (tensor or array), a
per-head grid larger than the head mean, and clear errors for labels that do not fit."""

import numpy as np
import pytest
import torch

from lmforge.errors import ConfigError
from lmforge.viz import plot_attention

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SRC = ["Der", "Hund", "läuft", "im", "Park", "."]  # Tk = 6 (columns)
TGT = ["The", "dog", "runs"]  # Tq = 3 (rows)


def weights(heads: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(heads, len(TGT), len(SRC), generator=g).softmax(-1)  # (H, Tq, Tk)


def read_png(path):
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    img = imread(path)  # (height, width, channels)
    assert img.ndim == 3 and img.shape[0] > 0 and img.shape[1] > 0
    return img


def test_mean_and_grid(tmp_path):
    mean = plot_attention(weights(), SRC, TGT, tmp_path / "sub" / "mean.png")
    grid = plot_attention(weights(), SRC, TGT, tmp_path / "grid.png", heads="all")
    m, g = read_png(mean), read_png(grid)
    assert m.shape[1] > m.shape[0]  # 6 columns by 3 rows: wider than tall
    assert g.shape[0] * g.shape[1] > m.shape[0] * m.shape[1]  # 2 x 2 panels


def test_2d_numpy_and_single_head(tmp_path):
    w = weights(1)[0].numpy()  # (Tq, Tk)
    read_png(plot_attention(w, SRC, TGT, tmp_path / "one.png", title="self"))
    read_png(plot_attention(weights(), SRC, TGT, tmp_path / "h1.png", heads=1))


def test_shape_errors(tmp_path):
    with pytest.raises(ConfigError, match="5 x_labels"):
        plot_attention(weights(), SRC[:5], TGT, tmp_path / "x.png")
    with pytest.raises(ConfigError, match="2 y_labels"):
        plot_attention(weights(), SRC, TGT[:2], tmp_path / "x.png")
    with pytest.raises(ConfigError, match="shaped"):
        plot_attention(torch.rand(2, 2, 3, 6), SRC, TGT, tmp_path / "x.png")
    with pytest.raises(ConfigError, match="heads"):
        plot_attention(weights(), SRC, TGT, tmp_path / "x.png", heads="max")
    with pytest.raises(ConfigError, match="4 heads"):
        plot_attention(weights(), SRC, TGT, tmp_path / "x.png", heads=4)
    assert not (tmp_path / "x.png").exists()
