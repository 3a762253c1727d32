"""``lmforge attention``'s pictures: one head's attention, the model view (every layer and
head as a thumbnail), the rollout, cross-attention for encoder–decoders, and a web page that
holds them all (the PNGs embedded, nothing fetched from elsewhere) with the logit lens."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..viz import plot_attention
from ..viz.figure import pyplot, save_figure

THUMB_INCHES = 1.3
MAX_GRID = 24  # layers or heads drawn at most in the model view


def plot_model_view(weights: np.ndarray, path: Path, title: str) -> Path:
    """Every (layer, head) attention map (L, H, Tq, Tk) as a small heatmap: rows = layers,
    columns = heads."""
    w = np.asarray(weights, dtype=np.float64)[:MAX_GRID, :MAX_GRID]
    L, H = w.shape[:2]
    plt = pyplot()
    fig, axes = plt.subplots(L, H, figsize=(THUMB_INCHES * H + 0.6, THUMB_INCHES * L + 0.6),
                             dpi=80, squeeze=False)
    for (l, h), ax in np.ndenumerate(axes):
        ax.imshow(w[l, h], cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if l == 0:
            ax.set_title(f"head {h}", fontsize=8)
        if h == 0:
            ax.set_ylabel(f"layer {l}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def write_attention_pictures(out: Path, data: dict, layer: int, head: int) -> list[Path]:
    """Write the PNGs and ``index.html`` for ``data`` (from :func:`~.explorer.explore`) into
    the directory ``out``; returns the files written."""
    att = np.asarray(data["attention"])  # (L, H, T, T)
    L, H = att.shape[:2]
    if not -L <= layer < L:
        raise ConfigError(f"--layer {layer}: the model has layers 0..{L - 1}")
    if not -H <= head < H:
        raise ConfigError(f"--head {head}: the model has heads 0..{H - 1}")
    layer, head = layer % L, head % H
    tok = data["tokens"]
    side = "encoder " if data["kind"] == "seq2seq" else ""
    files = [
        plot_attention(att[layer], tok, tok, out / "head.png", heads=head,
                       title=f"{side}self-attention, layer {layer}"),
        plot_model_view(att, out / "model_view.png", f"{side}self-attention: layers x heads"),
        plot_attention(np.asarray(data["rollout"]), tok, tok, out / "rollout.png",
                       title="attention rollout (all layers, heads averaged, + residual)"),
    ]
    if data["kind"] == "seq2seq":
        cross = np.asarray(data["cross_attention"])  # (Ld, H, T, S)
        ld = layer % cross.shape[0]
        files += [plot_attention(cross[ld], tok, data["target_tokens"], out / "cross.png",
                                 heads=head, title=f"cross-attention, decoder layer {ld}"),
                  plot_model_view(cross, out / "cross_model_view.png",
                                  "cross-attention: decoder layers x heads")]
    if "ablation" in data:
        files.append(plot_ablation(data["ablation"], out / "ablation.png"))
    files.append(_write_page(out / "index.html", data, files, layer, head))
    return files


def plot_ablation(ablation: dict, path: Path) -> Path:
    """Layers x heads: how much the loss rises when that one head is switched off."""
    delta = np.asarray(ablation["delta_loss"])  # (L, H)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.2 + 0.5 * delta.shape[1], 1.0 + 0.35 * delta.shape[0]))
    top = float(np.abs(delta).max()) or 1.0
    im = ax.imshow(delta, cmap="coolwarm", vmin=-top, vmax=top, aspect="auto")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(f"loss change with the head off (loss {ablation['loss']:.3f})", fontsize=9)
    fig.colorbar(im, ax=ax)
    return save_figure(fig, path)


def _lens_table(data: dict) -> str:
    lens = data["logit_lens"]
    if not lens:
        return "<p>This model has no token head: no logit lens.</p>"
    cols = data.get("target_tokens", data["tokens"])
    head = "<tr><th>layer</th>" + "".join(f"<th>{html.escape(repr(t))}</th>" for t in cols) + "</tr>"
    rows = []
    for l, per_pos in enumerate(lens):
        cells = "".join("<td>" + "<br>".join(f"{html.escape(repr(c['token']))} {c['prob']:.2f}"
                                             for c in pos[:3]) + "</td>" for pos in per_pos)
        rows.append(f"<tr><th>{l}</th>{cells}</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _write_page(path: Path, data: dict, pictures: list[Path], layer: int, head: int) -> Path:
    imgs = "".join(
        f"<h2>{html.escape(p.stem.replace('_', ' '))}</h2><img alt=\"{p.stem}\" src=\"data:image/"
        f"png;base64,{base64.b64encode(p.read_bytes()).decode('ascii')}\">" for p in pictures)
    page = ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>lmforge attention</title>"
            "<style>body{font-family:sans-serif;margin:2em}img{max-width:100%}table{border-"
            "collapse:collapse;font-size:12px}td,th{border:1px solid #ddd;padding:2px 5px}"
            "</style></head><body><h1>Attention</h1>"
            f"<p>A {data['kind']}; tokens: {html.escape(' '.join(map(repr, data['tokens'])))}."
            f" Head view: layer {layer}, head {head}. Rows attend to columns; each row sums to 1."
            f"</p>{imgs}<h2>logit lens (top 3 tokens after each layer)</h2>{_lens_table(data)}"
            "</body></html>")
    path.write_text(page, encoding="utf-8")
    return path
