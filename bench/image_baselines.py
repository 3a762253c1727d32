"""Image baselines: a small ResNet (``image_cnn``) vs a Vision Transformer (``vit``) as the
training set grows (10/25/50/100% of scikit-learn's digits, 20% held out), and on MNIST-1D
(``pip install mnist1d --no-deps``; built procedurally, offline; published: CNN 94%, GRU 91%,
MLP 68%, logistic regression 32%): validation accuracy and training time, same steps each.

MNIST-1D's 40-sample signals are zero-padded to 64 and laid out as 8x8 images (the CNN's 3x3
filters then see neighbours across rows too; a 1-D CNN would be the fairer reading).

    python bench/image_baselines.py                         # ~6 min (1500 steps per run)
    python bench/image_baselines.py --steps 30 --mnist1d 500   # smoke test, < 1 min
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, table  # noqa: E402
from lmforge.data.images import ImageSet, read_images  # noqa: E402
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


def mnist1d(n: int) -> tuple[ImageSet, ImageSet]:
    from mnist1d.data import get_dataset_args, make_dataset

    a = get_dataset_args()
    a.num_samples = n
    d = make_dataset(a)

    def as_images(sig, lab):
        sig = (sig - sig.min()) / (sig.max() - sig.min())
        x = np.zeros((len(sig), 64), np.float32)
        x[:, :40] = sig
        return ImageSet(x.reshape(-1, 1, 8, 8), lab.astype(np.int64), [str(k) for k in range(10)],
                        "mnist1d")
    return as_images(d["x"], d["y"]), as_images(d["x_test"], d["y_test"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--fractions", default="0.1,0.25,0.5,1.0")
    ap.add_argument("--mnist1d", type=int, default=5000, help="MNIST-1D samples (0 = skip)")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
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
    if args.mnist1d:
        tr, te = mnist1d(args.mnist1d)
        for arch in MODELS:
            acc, secs, n = train_eval(arch, tr, te, args.steps)
            rows.append([f"MNIST-1D ({len(tr.y)})", arch, f"{acc:.3f}", f"{secs:.0f} s", f"{n:,}"])
            print(rows[-1], flush=True)
    print(f"\n{machine()}; {args.steps} steps of 64 per run\n")
    print(table(["data (train images)", "model", "val acc", "train time", "params"], rows))
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


if __name__ == "__main__":
    main()
