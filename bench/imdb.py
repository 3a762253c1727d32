"""IMDB movie-review sentiment (Maas et al. 2011) with all-MiniLM-L6-v2 under a stated CPU
budget: accuracy on the 25,000-review test set.

Data: ../shared/data/imdb/{train,test}.jsonl.gz (25,000 + 25,000 reviews, balanced). 4% of
the training reviews are held out as dev (best weights); the rest are seen in seeded random
order until the budget (``--minutes`` of optimiser steps, train.max_minutes) or ``--epochs``
runs out. Reviews are long (median ~230 words): they are cut to ``--max-len`` tokens keeping
the head and the tail (Sun et al. 2019). Modes: ``full`` fine-tunes every weight (AdamW 5e-5,
linear decay); ``head-only`` encodes every review once with the frozen encoder (not counted
in the budget; reported in the wall time) and trains the classifier on those features.

    python bench/imdb.py [--mode full] [--minutes 30] [--max-len 256] [--truncation head+tail]
    python bench/imdb.py --limit 200 --eval-limit 200 --minutes 1   # smoke test
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, table  # noqa: E402
from bench.encoder_common import IMDB, classify_run, fmt_s, minilm_dir  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", default="full", choices=["full", "head-only"])
    ap.add_argument("--minutes", type=float, default=30.0, help="budget for the optimiser steps")
    ap.add_argument("--epochs", type=float, default=1.0, help="at most this many passes")
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--truncation", default="head+tail", choices=["head", "tail", "head+tail"])
    ap.add_argument("--lr", type=float, help="default 5e-5 (full), 3e-3 (head-only)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--eval-every", type=int, default=200, help="dev evaluation every N steps")
    ap.add_argument("--limit", type=int, default=0, help="train on N random training reviews")
    ap.add_argument("--eval-limit", type=int, default=0,
                    help="score N random test (and dev) reviews; 0 = all 25,000")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="runs/bench-imdb")
    ap.add_argument("--minilm", default="runs/minilm")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--device", default="auto", help="train.device (cpu, cuda, auto)")
    args = ap.parse_args()
    full = args.mode == "full"
    lr = args.lr or (5e-5 if full else 3e-3)
    init = minilm_dir(args.minilm)
    run, t = classify_run([
        f'out_dir="{args.out}/{args.mode}"', f"seed={args.seed}", f'classify.init_from="{init}"',
        f'classify.train="{IMDB / "train.jsonl.gz"}"', f'classify.test="{IMDB / "test.jsonl.gz"}"',
        'classify.format="jsonl"', "classify.dev_fraction=0.04", f"classify.limit={args.limit}",
        f"classify.eval_limit={args.eval_limit}", f"classify.max_len={args.max_len}",
        f'classify.truncation="{args.truncation}"', f'classify.mode="{args.mode}"',
        f"classify.epochs={args.epochs}", 'classify.metric="accuracy"',
        f"train.max_minutes={args.minutes}", f"train.batch_size={args.batch_size}",
        f"train.eval_every={args.eval_every}", "train.checkpoint_every=0", f"train.lr={lr}",
        'train.schedule="linear"', "train.min_lr=0.0", f"train.warmup_steps={50 if full else 10}",
        f"train.weight_decay={0.01 if full else 0.0}",
        f"train.progress={'true' if args.progress else 'false'}", f'train.device="{args.device}"'])
    r, m = run.result, run.metrics
    seen = r.step * args.batch_size
    meta = json.loads((run.out_dir / "meta.json").read_text(encoding="utf-8"))
    n_train, n_test = meta["data"]["train"]["rows"], meta["data"]["test"]["rows"]
    cut = meta["data"]["test"]["truncated"]
    print(f"\nIMDB, all-MiniLM-L6-v2 {args.mode}, max_len {args.max_len} ({args.truncation}; "
          f"{cut / n_test:.0%} of test reviews cut), budget {args.minutes:g} min of steps")
    print(machine())
    print(table(["mode", "train reviews", "seen", "steps", "stopped by", "train+eval wall",
                 "CPU time", "test reviews", "test acc", "test macro-F1", "dev acc (best)"],
                [[args.mode, f"{n_train:,}", f"{seen:,}", str(r.step),
                  "budget" if r.stopped_early else "epochs", fmt_s(t.wall), fmt_s(t.cpu),
                  f"{n_test:,}", f"{m['test_accuracy']:.4f}", f"{m['test_macro_f1']:.4f}",
                  f"{m['dev_accuracy']:.4f}"]]))


if __name__ == "__main__":
    main()
