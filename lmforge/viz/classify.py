"""Pictures for classifiers and embeddings: a confusion matrix, and a 2-D projection of
embeddings coloured by cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .figure import pyplot, save_figure


def plot_confusion_matrix(cm: Sequence[Sequence[int]], labels: Sequence[str], path: str | Path,
                          title: str = "confusion matrix") -> Path:
    """Counts with rows = true class, columns = predicted class; cells shaded by row share."""
    plt = pyplot()
    cm = np.asarray(cm)
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    k = len(labels)
    size = min(3 + 0.6 * k, 14)
    fig, ax = plt.subplots(figsize=(size, size * 0.85), dpi=120)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), [str(x) for x in labels], rotation=45 if k > 4 else 0,
                  ha="right" if k > 4 else "center")
    ax.set_yticks(range(k), [str(x) for x in labels])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                        color="white" if share[i, j] > 0.5 else "black", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_title(title)
    return save_figure(fig, path)


def plot_embedding_clusters(points: np.ndarray, clusters: np.ndarray, path: str | Path,
                            title: str = "embeddings", names: Sequence[str] | None = None) -> Path:
    """Scatter of 2-D points (N, 2) coloured by cluster id (N,); ``names`` label the colours."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 6), dpi=120)
    ids = np.unique(clusters)
    cmap = plt.get_cmap("tab10" if len(ids) <= 10 else "tab20")
    for n, c in enumerate(ids):
        sel = clusters == c
        name = names[int(c)] if names is not None else f"cluster {c}"
        ax.scatter(points[sel, 0], points[sel, 1], s=8, alpha=0.7, color=cmap(n % cmap.N),
                   label=f"{name} ({int(sel.sum())})")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    if len(ids) <= 20:
        ax.legend(markerscale=2, fontsize=8, loc="best")
    return save_figure(fig, path)
