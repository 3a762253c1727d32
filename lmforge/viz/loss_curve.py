"""Loss curves: training and validation loss against step, written as a PNG."""

from __future__ import annotations

from pathlib import Path

from .figure import pyplot, save_figure


def plot_loss_curve(rows: list[dict], path: str | Path, title: str = "loss") -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for split, style in (("train", "-"), ("val", "o-")):
        pts = [(r["step"], r["loss"]) for r in rows if r.get("split") == split]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, style, label=split, markersize=3, linewidth=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)
