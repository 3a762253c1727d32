"""Quality per CPU minute: the best validation loss on Tiny Shakespeare (character level, the
last 10% of the file held out) reached within a fixed wall-clock budget, with the shipped
``shakespeare-char`` preset. Reference: nanoGPT's CPU recipe reports about 1.88 after its
2,000 steps (README of karpathy/nanoGPT, "baby GPT" on a MacBook CPU).

    python bench/shakespeare_quality.py [--minutes 10] [--data PATH] [--out runs/bench-shakespeare]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, table  # noqa: E402
from lmforge.tasks.lm import train_lm  # noqa: E402
from lmforge.tasks import RunConfig  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / "input.txt"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--out", default="runs/bench-shakespeare")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    cfg = RunConfig.load(None, [f'out_dir="{args.out}"', f'data.path="{args.data}"',
                                f"train.max_minutes={args.minutes}", "train.eval_batches=28",
                                "data.val_fraction=0.1"] + args.overrides,
                         preset="shakespeare-char")
    run = train_lm(cfg, overwrite=True)
    r = run.result
    vals = [(row["step"], row["loss"]) for row in r.history if row["split"] == "val"]
    print(f"\nTiny Shakespeare, char level, last 10% held out; preset shakespeare-char "
          f"({run.model.num_params() / 1e6:.2f}M params), budget {args.minutes:g} min")
    print(machine())
    print(table(["step", "val loss (nats/char)", "bits/char"],
                [[s, f"{v:.4f}", f"{v / math.log(2):.3f}"] for s, v in vals]))
    print(f"best val loss {r.best_val_loss:.4f} after {r.step} steps, {r.tokens:,} tokens, "
          f"{r.elapsed_s:.0f} s ({r.tokens_per_s:,.0f} tokens/s); target <= 1.70; "
          f"nanoGPT CPU recipe ~1.88")


if __name__ == "__main__":
    main()
