"""A ViT's attention drawn over its input image: the attention rollout and, per head of the
last layer, where the [CLS] token looked — each a (grid, grid) map over the patches, upsampled
to the image and laid over it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .figure import pyplot, save_figure


def _upsample(m: np.ndarray, size: int) -> np.ndarray:
    """(g, g) -> (size, size) by repeating each patch's value over its pixels."""
    k = max(1, size // m.shape[0])
    return np.kron(m, np.ones((k, k)))[:size, :size]


def plot_image_attention(image: np.ndarray, rollout: np.ndarray, heads: np.ndarray,
                         path: str | Path, title: str = "") -> Path:
    """image (C, S, S) in [0, 1]; rollout (g, g); heads (H, g, g). One row: the image, the
    rollout over it, and each head of the last layer over it."""
    plt = pyplot()
    img = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    cmap = "gray" if image.shape[0] == 1 else None
    maps = [("rollout", rollout)] + [(f"last layer, head {h}", m) for h, m in enumerate(heads)]
    n = 1 + len(maps)
    fig, axes = plt.subplots(1, n, figsize=(2.4 * n, 2.8), squeeze=False)
    axes[0, 0].imshow(img, cmap=cmap, vmin=0, vmax=1)
    axes[0, 0].set_title(title or "image", fontsize=9)
    S = img.shape[0]
    for ax, (name, m) in zip(axes[0, 1:], maps):
        ax.imshow(img, cmap=cmap, vmin=0, vmax=1)
        ax.imshow(_upsample(m / max(float(m.max()), 1e-12), S), cmap="inferno", alpha=0.6,
                  vmin=0, vmax=1)
        ax.set_title(name, fontsize=9)
    for ax in axes[0]:
        ax.set_xticks([])
        ax.set_yticks([])
    return save_figure(fig, path)
