"""SST-2 sentence sentiment with all-MiniLM-L6-v2 on a CPU: full fine-tuning (every weight)
and, for reference, head-only training on the frozen encoder; accuracy on the 1,821-sentence
test set, with the wall and CPU time each took.

Data: ../shared/data/sst/stsa.binary.{train,dev,test} (6,920 / 872 / 1,821 sentences). The
dev set picks the best evaluation (accuracy, evaluated twice per epoch); the test set is
scored once with those weights. Full: AdamW lr 1e-4 (--lr), linear decay, 6% warmup, weight
decay 0.01, batch 32, max_len 64 (SST sentences are short: 99.9% fit), 4 epochs (--epochs),
layer-wise learning-rate decay --layer-decay (default 1 = none), pooling as the model
directory says (mean for MiniLM; --pooling). Head-only: cached mean-pooled features, lr 3e-3,
20 epochs.

    python bench/sst2_minilm.py [--modes full,head-only] [--epochs 4] [--lr 1e-4] [--layer-decay 1]
    python bench/sst2_minilm.py --limit 200 --eval-limit 200 --epochs 1   # smoke test"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, table  # noqa: E402
from bench.encoder_common import SST2_TRAIN as N_TRAIN  # noqa: E402
from bench.encoder_common import (add_sst2_args, classify_run, fmt_s, minilm_dir,  # noqa: E402
                                   sst2_overrides)



def overrides(mode: str, args, init: Path) -> list[str]:
    if mode == "full":
        return sst2_overrides(mode, args, init, args.epochs) + [
            f"train.lr={args.lr}", "train.weight_decay=0.01",
            f"train.layer_decay={args.layer_decay}", f'classify.pooling="{args.pooling}"']
    return sst2_overrides(mode, args, init, args.head_epochs) + [
        f"train.lr={args.head_lr}", "train.warmup_steps=10", "train.weight_decay=0.0"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default="full,head-only")
    ap.add_argument("--epochs", type=float, default=4.0, help="full fine-tuning epochs")
    ap.add_argument("--head-epochs", type=float, default=20.0, help="head-only epochs")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--layer-decay", type=float, default=1.0, help="train.layer_decay (full)")
    ap.add_argument("--pooling", default="auto", help="classify.pooling (full): auto, cls, mean")
    ap.add_argument("--head-lr", type=float, default=3e-3)
    ap.add_argument("--device", default="auto", help="train.device (cpu, cuda, auto)")
    add_sst2_args(ap, "runs/bench-sst2")
    args = ap.parse_args()
    init = minilm_dir(args.minilm)
    rows = []
    for mode in args.modes.split(","):
        run, t = classify_run(overrides(mode, args, init) + [f'train.device="{args.device}"'])
        m, trained = run.metrics, run.model.num_params(trainable_only=True)
        rows.append([mode, f"{trained:,}", f"{args.limit or N_TRAIN}",
                     f"{args.epochs if mode == 'full' else args.head_epochs:g}",
                     str(run.result.step), fmt_s(t.wall), fmt_s(t.cpu),
                     f"{m['dev_accuracy']:.4f}", f"{m['test_accuracy']:.4f}",
                     f"{m['test_macro_f1']:.4f}", f"{m['test_majority']:.4f}"])
        print(f"{mode}: done in {fmt_s(t.wall)}", flush=True)
    print(f"\nSST-2 (stsa.binary), all-MiniLM-L6-v2 (22.7M params), max_len {args.max_len}, "
          f"batch {args.batch_size}; test sentences: {args.eval_limit or 1821}")
    print(machine())
    print(table(["mode", "trained params", "train sentences", "epochs", "steps", "wall time",
                 "CPU time", "dev acc (best)", "test acc", "test macro-F1", "majority baseline"],
                rows))


if __name__ == "__main__":
    main()
