"""Attention heatmaps: which source tokens each target token looked at (cross-attention), or
which earlier tokens each token looked at (self-attention).

Rows are the attending (query / target) tokens, columns the attended (key / source) tokens, so
a row of a softmax attention map sums to 1.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError
from .figure import pyplot, save_figure

CELL_INCHES = 0.32  # size of one heatmap cell
MAX_PANEL_INCHES = 14.0  # long sequences shrink their cells instead of growing the figure


def _as_array(weights) -> np.ndarray:
    """A float numpy array from a torch tensor (any device/dtype) or anything array-like."""
    if hasattr(weights, "detach"):  # torch.Tensor, without importing torch here
        weights = weights.detach().float().cpu().numpy()
    return np.asarray(weights, dtype=np.float64)


def _panel_inches(tq: int, tk: int) -> tuple[float, float]:
    """(width, height) of one panel: cells plus room for tick labels and a colourbar."""
    width = min(1.5 + CELL_INCHES * tk, MAX_PANEL_INCHES) + 1.2
    height = min(1.5 + CELL_INCHES * tq, MAX_PANEL_INCHES)
    return max(width, 4.0), max(height, 3.0)


def _heatmap(fig, ax, w: np.ndarray, x_labels: Sequence[str], y_labels: Sequence[str],
             title: str, vmax: float) -> None:
    """One (Tq, Tk) heatmap with token tick labels and its colourbar."""
    tq, tk = w.shape
    im = ax.imshow(w, cmap="viridis", vmin=0.0, vmax=vmax, aspect="auto",
                   interpolation="nearest")
    size = 9 if max(tq, tk) <= 30 else 6 if max(tq, tk) <= 80 else 4
    ax.set_xticks(range(tk), [str(x) for x in x_labels], rotation=60, ha="right",
                  rotation_mode="anchor", fontsize=size)
    ax.set_yticks(range(tq), [str(y) for y in y_labels], fontsize=size)
    ax.set_xlabel("source (attended) tokens")
    ax.set_ylabel("target (attending) tokens")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="attention weight")


def plot_attention(weights, x_labels: Sequence[str], y_labels: Sequence[str], path: str | Path,
                   title: str = "cross-attention", heads: str | int = "mean") -> Path:
    """Draw attention weights as a heatmap and write a PNG to ``path``.

    ``weights``: a tensor or array (H, Tq, Tk) or (Tq, Tk); rows are target tokens
    (``y_labels``, Tq of them), columns source tokens (``x_labels``, Tk of them).
    ``heads``: "mean" averages the heads into one heatmap, "all" draws one panel per head in a
    grid (all on the same colour scale), an int draws that one head.
    """
    w = _as_array(weights)
    if w.ndim == 2:
        w = w[None]  # (1, Tq, Tk)
    if w.ndim != 3 or 0 in w.shape:
        raise ConfigError(f"attention weights must be shaped (heads, target, source) or "
                          f"(target, source) with no empty dimension, got {tuple(w.shape)}; "
                          f"pick one layer and one batch item first, e.g. weights[layer][0]")
    n_heads, tq, tk = w.shape  # (H, Tq, Tk)
    if len(x_labels) != tk or len(y_labels) != tq:
        raise ConfigError(
            f"attention weights of shape {tuple(w.shape)} have {tq} target rows and {tk} "
            f"source columns, but got {len(y_labels)} y_labels (target tokens) and "
            f"{len(x_labels)} x_labels (source tokens); pass one label per row/column, "
            f"without padding (or slice the weights to the real tokens)")
    if not np.isfinite(w).all():
        raise ConfigError("attention weights contain NaN or inf; slice away fully-masked rows "
                          "(padding) before plotting")

    if heads == "mean":
        panels = [(w.mean(0), f"{title} (mean of {n_heads} heads)" if n_heads > 1 else title)]
    elif heads == "all":
        panels = [(w[h], f"head {h}") for h in range(n_heads)]
    elif isinstance(heads, int) and not isinstance(heads, bool):
        if not -n_heads <= heads < n_heads:
            raise ConfigError(f"heads={heads} but the weights have {n_heads} heads "
                              f"(0..{n_heads - 1}); use \"mean\", \"all\" or a head index")
        panels = [(w[heads], f"{title} (head {heads % n_heads})")]
    else:
        raise ConfigError(f"heads must be \"mean\", \"all\" or a head index, got {heads!r}")

    plt = pyplot()
    cols = math.ceil(math.sqrt(len(panels)))
    rows = math.ceil(len(panels) / cols)
    pw, ph = _panel_inches(tq, tk)
    fig, axes = plt.subplots(rows, cols, figsize=(pw * cols, ph * rows), dpi=100, squeeze=False)
    vmax = max(float(max(p.max() for p, _ in panels)), 1e-9)  # one colour scale for all panels
    for ax, (panel, name) in zip(axes.flat, panels):
        _heatmap(fig, ax, panel, x_labels, y_labels, name, vmax)
    for ax in list(axes.flat)[len(panels):]:  # unused cells of the grid
        ax.set_axis_off()
    if len(panels) > 1:
        fig.suptitle(title)
    return save_figure(fig, path)
