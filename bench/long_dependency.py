"""Long dependencies: the copy-the-first-tokens problem at lengths 50..1000. Each sequence is
K = 5 random symbols, then L filler tokens, a marker, and the K symbols again; the loss and
accuracy count only the recalled symbols, which lie L + 1 positions after what they copy.
RNN, LSTM, GRU (:class:`~lmforge.models.recurrent.RecurrentLM`) and a causal Transformer
(:class:`~lmforge.models.CausalLM`) get the same steps: recall accuracy against distance, and
training step time against length. Each run stops once recall reaches 0.99 and reports
the steps it took.

    python bench/long_dependency.py                               # ~30 min
    python bench/long_dependency.py --lengths 50,100 --steps 20   # smoke test, < 1 min
    python bench/long_dependency.py --k 1 --plot long_dependency_k1.png   # recall one symbol
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, table  # noqa: E402
from lmforge.models import ModelConfig, build_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
K, SYMBOLS, FILL, MARK = 5, 8, 9, 10  # symbols 1..8, filler 9, marker 10; vocab 11
ARCHS = ["rnn", "lstm", "gru", "decoder"]


def copy_batch(g: torch.Generator, B: int, L: int):
    x = torch.randint(1, SYMBOLS + 1, (B, K), generator=g)
    seq = torch.cat([x, torch.full((B, L), FILL), torch.full((B, 1), MARK), x], 1)
    return seq[:, :-1], seq[:, 1:]  # inputs, targets; the last K targets are the recall


def recall(model, L: int) -> float:
    """Recall accuracy on 256 held-out sequences (a fixed seed)."""
    x, y = copy_batch(torch.Generator().manual_seed(1), 256, L)
    with torch.no_grad():
        pred = model.eval()(x)[:, -K:].argmax(-1)
    model.train()
    return float((pred == y[:, -K:]).float().mean())


def run(arch: str, L: int, steps: int, batch: int, every: int = 100,
        positional: str = "learned") -> tuple[float, float, int]:
    """(recall accuracy, seconds per training step, steps taken): training stops early once
    the recall accuracy (checked every ``every`` steps) reaches 0.99."""
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, vocab_size=11, d_model=64, n_layer=2, n_head=4,
                      context_length=L + 2 * K + 1, positional=positional)
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    train_secs, acc, step = 0.0, 0.0, 0
    while step < steps:
        t0 = time.perf_counter()
        x, y = copy_batch(g, batch, L)
        logits = model(x)[:, -K:]
        loss = F.cross_entropy(logits.flatten(0, 1), y[:, -K:].flatten())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        train_secs += time.perf_counter() - t0
        step += 1
        if step % every == 0 or step == steps:
            acc = recall(model, L)
            if acc >= 0.99:
                break
    return acc, train_secs / step, step


def main() -> None:
    global K
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", default="50,100,200,500,1000")
    ap.add_argument("--archs", default=",".join(ARCHS))
    ap.add_argument("--steps", type=int, default=1500, help="at most this many steps")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--k", type=int, default=K, help="symbols to copy (1 = recall one token)")
    ap.add_argument("--plot", default="long_dependency.png")
    ap.add_argument("--positional", default="learned", help="the decoder's positions (rope, ...)")
    ap.add_argument("--timing-only", action="store_true",
                    help="record only the step time (a few steps, no accuracy)")
    ap.add_argument("--results", default="long_dependency.json",
                    help="results are merged into this file in bench/results/ (by model, K, "
                         "distance), and the plot drawn from all of them")
    args = ap.parse_args()
    K = args.k
    lengths = [int(v) for v in args.lengths.split(",")]
    store = RESULTS / args.results
    merged = json.loads(store.read_text()) if store.is_file() else {}
    rows = []
    for arch in args.archs.split(","):
        name = arch if arch != "decoder" else f"decoder ({args.positional})"
        for L in lengths:
            a, s, n = run(arch, L, args.steps, args.batch, positional=args.positional)
            merged[f"{name}|{K}|{L}"] = {"acc": None if args.timing_only else a, "step_s": s,
                                         "steps": n}
            store.write_text(json.dumps(merged, indent=1))
            rows.append([name, L, f"{a:.3f}", n, f"{s * 1000:.0f} ms"])
            print(rows[-1], flush=True)
    print(f"\n{machine()}; at most {args.steps} steps of {args.batch} (stopping at recall "
          f">= 0.99); K = {K} symbols; chance {1 / SYMBOLS:.3f}\n")
    print(table(["model", "distance", "recall acc", "steps", "step time"], rows))
    from lmforge.viz.figure import pyplot, save_figure

    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.5))
    curves: dict = {}
    for key, r in merged.items():
        name, k, L = key.split("|")
        if int(k) == K:
            curves.setdefault(name, []).append((int(L), r["acc"], r["step_s"]))
    for name, pts in sorted(curves.items()):
        pts.sort()
        got = [p for p in pts if p[1] is not None]  # None: a timing-only run (--timing-only)
        a1.plot([p[0] for p in got], [p[1] for p in got], marker="o", label=name)
        a2.plot([p[0] for p in pts], [p[2] * 1000 for p in pts], marker="o", label=name)
    a1.axhline(1 / SYMBOLS, ls=":", c="gray")
    a1.set(xscale="log", xlabel="distance (tokens)", ylabel="recall accuracy",
           title=f"copy {K} symbol(s)")
    a2.set(xscale="log", yscale="log", xlabel="sequence length", ylabel="ms per step")
    a1.legend()
    print("plot:", save_figure(fig, RESULTS / args.plot))


if __name__ == "__main__":
    main()
