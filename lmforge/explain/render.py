"""Showing a :class:`~.walkthrough.Walkthrough`: compact text for a terminal (shapes and a
corner of each matrix), or a self-contained web page (every number, coloured by value; no
external scripts, styles or fonts)."""

from __future__ import annotations

import html
import math

import torch

from .walkthrough import Step, Walkthrough

TERM_ROWS, TERM_COLS = 6, 8  # the corner of a matrix the terminal shows
HTML_ROWS, HTML_COLS, HTML_HEADS = 64, 64, 8  # what the page shows at most


def _num(v: float) -> str:
    if math.isinf(v):
        return "-inf" if v < 0 else "inf"
    return f"{v:.4f}" if abs(v) < 1e4 else f"{v:.3g}"


def _shape(t: torch.Tensor) -> str:
    return " x ".join(str(s) for s in t.shape) or "scalar"


def _matrix(step: Step) -> tuple[torch.Tensor, str]:
    """The 2-D (or 1-D) part of a step shown in a terminal, and what was left out."""
    t = step.tensor
    if t.dim() == 3:
        return t[0], f"head 0 of {t.shape[0]}"
    return t, ""


def _text_lines(step: Step) -> list[str]:
    t, which = _matrix(step)
    if t.dim() <= 1:
        vals = t.flatten().tolist()
        more = " ..." if len(vals) > TERM_COLS else ""
        fmt = (lambda v: f"{int(v):>8}") if step.name == "token ids" else (lambda v: f"{_num(v):>8}")
        return ["      [" + " ".join(fmt(v) for v in vals[:TERM_COLS]) + more + " ]"]
    labels = step.rows if step.rows and len(step.rows) == t.shape[0] else \
        [str(i) for i in range(t.shape[0])]
    width = min(10, max(len(repr(x)) for x in labels))
    out = [f"      ({which})"] if which else []
    for i, row in enumerate(t[:TERM_ROWS].tolist()):
        more = " ..." if len(row) > TERM_COLS else ""
        out.append(f"      {repr(labels[i])[:width]:>{width}} ["
                   + " ".join(f"{_num(v):>8}" for v in row[:TERM_COLS]) + more + " ]")
    if t.shape[0] > TERM_ROWS:
        out.append(f"      ... {t.shape[0] - TERM_ROWS} more rows")
    return out


def format_terminal(walk: Walkthrough) -> str:
    """The walkthrough as compact text: per step its shape, what it is, a corner of its
    numbers, and what it was checked against."""
    lines = [f"{walk.kind}: {len(walk.tokens)} tokens {walk.tokens!r}, ids {walk.ids}; "
             f"block {walk.layer} opened up"]
    for n, step in enumerate(walk.steps, 1):
        check = f"  = {step.checked} (max diff {step.max_diff:.1e})" if step.checked else ""
        lines.append(f"[{n:2}] {step.name}  ({_shape(step.tensor)}){check}")
        lines.append(f"      {step.explanation}")
        lines += _text_lines(step)
        if step.note:
            lines.append(f"      {step.note}")
    if walk.top:
        lines.append("top: " + ", ".join(f"{t!r} {p:.3f}" for t, p in walk.top))
    checked = sum(s.checked is not None for s in walk.steps)
    lines.append(f"{checked} of {len(walk.steps)} steps checked against the model's own "
                 "forward pass: all agree")
    return "\n".join(lines)


_STYLE = """body{font-family:sans-serif;margin:2em;max-width:80em;color:#222}
table{border-collapse:collapse;font-family:monospace;font-size:12px;margin:.3em 0 1em}
td,th{border:1px solid #ddd;padding:2px 5px;text-align:right}th{background:#f4f4f4}
.step{margin-bottom:1.5em}.ok{color:#070}.note{color:#555}h3{margin-bottom:.2em}"""


def _colour(v: float, top: float) -> str:
    """Blue for negative, red for positive, stronger for larger magnitude."""
    if not math.isfinite(v):
        return "#ccc"
    a = min(abs(v) / top, 1.0) if top > 0 else 0.0
    return f"rgba(200,40,40,{a * .6:.2f})" if v > 0 else f"rgba(40,80,200,{a * .6:.2f})"


def _html_table(t: torch.Tensor, rows: list[str] | None) -> str:
    if t.dim() <= 1:
        t, rows = t[None], None
    t = t[:HTML_ROWS, :HTML_COLS]
    finite = t[torch.isfinite(t)]
    top = float(finite.abs().max()) if finite.numel() else 1.0
    head = "<tr><th></th>" + "".join(f"<th>{j}</th>" for j in range(t.shape[1])) + "</tr>"
    body = []
    for i, row in enumerate(t.tolist()):
        label = html.escape(repr(rows[i]) if rows and i < len(rows) else str(i))
        cells = "".join(f'<td style="background:{_colour(v, top)}">{_num(v)}</td>' for v in row)
        body.append(f"<tr><th>{label}</th>{cells}</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _html_step(n: int, step: Step) -> str:
    t = step.tensor
    parts = [f'<div class="step"><h3>{n}. {html.escape(step.name)} '
             f'<small>({_shape(t)})</small></h3><p>{html.escape(step.explanation)}</p>']
    if step.checked:
        parts.append(f'<p class="ok">equals the model\'s {html.escape(step.checked)} '
                     f'(max difference {step.max_diff:.1e})</p>')
    if t.dim() == 3:
        for h in range(min(t.shape[0], HTML_HEADS)):
            parts.append(f"<p>head {h}</p>" + _html_table(t[h], step.rows))
    else:
        parts.append(_html_table(t, step.rows))
    if step.note:
        parts.append(f'<p class="note">{html.escape(step.note)}</p>')
    return "".join(parts) + "</div>"


def format_html(walk: Walkthrough, title: str = "lmforge explain") -> str:
    """The walkthrough as one self-contained HTML page."""
    top = "".join(f"<tr><td>{html.escape(repr(t))}</td><td>{p:.4f}</td></tr>" for t, p in walk.top)
    steps = "".join(_html_step(n, s) for n, s in enumerate(walk.steps, 1))
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title><style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p>A {walk.kind}, {len(walk.tokens)} tokens: "
            f"{html.escape(' '.join(repr(t) for t in walk.tokens))}; block {walk.layer} opened "
            "up head by head. Every step marked in green was compared with the model's own "
            "forward pass.</p>" + steps
            + (f"<h2>Top tokens</h2><table>{top}</table>" if top else "") + "</body></html>")
