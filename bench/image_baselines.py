"""Image baselines: a small ResNet (``image_cnn``) vs a Vision Transformer (``vit``) as the
training set grows (10/25/50/100% of scikit-learn's digits, 20% held out), and MNIST-1D
(``pip install mnist1d --no-deps``; built procedurally, offline; default arguments: 4,000
train / 1,000 test signals of 40 samples; published: CNN 94%, GRU 91%, MLP 68%): the 1-D
models of lmforge.models.signal on the raw signals, each with its own recipe (MNIST1D below),
test accuracy, training time and parameters.

    python bench/image_baselines.py                         # digits (~5 min) + MNIST-1D
    python bench/image_baselines.py --only mnist1d --threads 1   # MNIST-1D only
    python bench/image_baselines.py --steps 30 --mnist1d-steps 30   # smoke test, < 1 min
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, table  # noqa: E402
from lmforge.data.images import MNIST1D as MNIST1D_SOURCE  # noqa: E402
from lmforge.data.images import ImageSet, random_shift, read_images  # noqa: E402
from lmforge.models import ModelConfig, build_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = {"image_cnn": dict(d_model=16, n_layer=2, n_head=4),
          "vit": dict(d_model=64, n_layer=3, n_head=4, patch_size=2, positional="learned")}


def train_eval(arch: str, train: ImageSet, val: ImageSet, steps: int, seed: int = 0):
    """(val accuracy, seconds, parameters) of ``arch`` trained ``steps`` AdamW steps."""
    torch.manual_seed(seed)
    size = train.x.shape[-1]
    cfg = ModelConfig(arch=arch, heads="classifier", n_classes=len(train.labels), image_size=size,
                      image_channels=train.x.shape[1], context_length=(size // 2) ** 2 + 1,
                      **MODELS[arch])
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps, pct_start=0.1)
    x, y = torch.from_numpy(train.x), torch.from_numpy(train.y)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, len(y), (min(64, len(y)),), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    secs = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(torch.from_numpy(val.x[i:i + 512])).argmax(-1)
                          for i in range(0, len(val.y), 512)])
    return float((pred.numpy() == val.y).mean()), secs, model.num_params()


@dataclass
class Recipe:
    """How one MNIST-1D model is trained: the [model] fields and the optimiser."""

    model: dict
    steps: int = 6000
    batch: int = 100
    lr: float = 1e-2
    weight_decay: float = 0.0
    warmup: float = 0.0
    """> 0: one-cycle schedule (this share warming up, then cosine); 0 = constant lr."""
    shift: int = 0
    """Random shifts of up to this many samples (augmentation)."""


MNIST1D = {  # the paper's CNN (3 conv layers of 25 channels, kernel 5, stride 2) + shifts
    "image_cnn": Recipe(dict(d_model=25, n_layer=3, n_head=5), steps=4000, warmup=0.05, shift=3),
    "gru": Recipe(dict(d_model=32, n_layer=1, n_head=4), steps=1500, warmup=0.05),
    "vit": Recipe(dict(d_model=32, n_layer=2, n_head=4, patch_size=2, positional="rope",
                       conv_widths=[5, 5], classifier_pooling="mean"),
                  steps=3000, lr=3e-3, weight_decay=0.05, warmup=0.1, shift=3),
}
"""Recipes: AdamW (Adam when weight_decay = 0), batch 100, one-cycle lr schedule."""


def train_signals(arch: str, r: Recipe, train: ImageSet, test: ImageSet, steps: int,
                  seed: int = 0):
    """(test accuracy, seconds, parameters) of ``arch`` on signals trained by recipe ``r``."""
    torch.manual_seed(seed)
    cfg = ModelConfig(arch=arch, heads="classifier", n_classes=len(train.labels),
                      signal_length=train.x.shape[-1], image_channels=train.x.shape[1], **r.model)
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=r.lr, weight_decay=r.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, r.lr, total_steps=steps, pct_start=r.warmup) \
        if r.warmup else None
    x, y = torch.from_numpy(train.x), torch.from_numpy(train.y)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, len(y), (r.batch,), generator=g)
        loss = F.cross_entropy(model(random_shift(x[idx], r.shift, g)), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
    secs = time.perf_counter() - t0
    acc = accuracy(model, test)
    return acc, secs, model.num_params()


def accuracy(model, data: ImageSet) -> float:
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(torch.from_numpy(data.x[i:i + 512])).argmax(-1)
                          for i in range(0, len(data.y), 512)])
    return float((pred.numpy() == data.y).mean())


def run_mnist1d(steps: int, archs: list[str]) -> list[list[str]]:
    """Rows of the MNIST-1D table (standard split)."""
    train, test = read_images(MNIST1D_SOURCE).split(0.2, 0)  # the source's own test rows
    rows = []
    for arch in archs:
        r = MNIST1D[arch]
        acc, secs, n = train_signals(arch, r, train, test, steps or r.steps)
        rows.append([f"MNIST-1D ({len(train.y)}/{len(test.y)})", arch, f"{acc:.3f}",
                     f"{secs:.0f} s", f"{n:,}"])
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1500, help="digits: steps per run")
    ap.add_argument("--fractions", default="0.1,0.25,0.5,1.0")
    ap.add_argument("--only", choices=["digits", "mnist1d"], help="run one part")
    ap.add_argument("--mnist1d-steps", type=int, default=0, help="0 = each recipe's steps")
    ap.add_argument("--mnist1d-archs", default=",".join(MNIST1D))
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows: list[list[str]] = []
    if args.only != "digits":
        rows += run_mnist1d(args.mnist1d_steps, args.mnist1d_archs.split(","))
    if args.only != "mnist1d":
        rows += run_digits(args)
    print(f"\n{machine()}\n")
    print(table(["data (train/test)", "model", "test acc", "train time", "params"], rows))


def run_digits(args) -> list[list[str]]:
    """Rows of the digits learning curve, and its plot."""
    digits = read_images("sklearn:digits")
    train_all, val = digits.split(0.2, 0)
    rows, curve = [], {a: [] for a in MODELS}
    for frac in map(float, args.fractions.split(",")):
        train = train_all if frac >= 1 else train_all.split(1 - frac, 1)[0]
        for arch in MODELS:
            acc, secs, n = train_eval(arch, train, val, args.steps)
            curve[arch].append((len(train.y), acc))
            rows.append([f"digits {frac:.0%} ({len(train.y)})", arch, f"{acc:.3f}", f"{secs:.0f} s", f"{n:,}"])
            print(rows[-1], flush=True)
    from lmforge.viz.figure import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for arch, pts in curve.items():
        ax.plot([n for n, _ in pts], [a for _, a in pts], marker="o", label=arch)
    ax.set_xscale("log")
    ax.set_xlabel("training images (digits)")
    ax.set_ylabel("val accuracy")
    ax.legend()
    print("plot:", save_figure(fig, RESULTS / "image_baselines.png"))
    return rows


if __name__ == "__main__":
    main()
