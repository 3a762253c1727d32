"""Multi30k translation quality per training budget: train the ``translation-small`` preset
(3+3 layers, d_model 256, joint byte-level BPE of 8,000 tokens) on the 29,000 training pairs,
then translate ``test_2016_flickr`` with beam search and score it with sacrebleu (BLEU, chrF on
detokenised text). Runs English->German and German->English by default.

    python bench/multi30k.py [--pairs en-de,de-en] [--steps 2000] [--minutes 0] [--device auto]
                             [--data ../shared/data/multi30k] [--out runs/bench-multi30k]

``--steps 20 --no-test`` measures the seconds per step of this device, to project how many
steps a budget buys (the CPU figure in the notes comes from that).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, table  # noqa: E402
from lmforge.tasks import train_task  # noqa: E402
from lmforge.tasks import RunConfig  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", default="en-de,de-en")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--minutes", type=float, default=0.0, help="wall-clock budget per pair")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--out", default="runs/bench-multi30k")
    ap.add_argument("--no-test", action="store_true", help="skip the test-set translation")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    rows = []
    for pair in args.pairs.split(","):
        src, tgt = pair.split("-")
        over = [f'out_dir="{args.out}/{pair}"', f'seq2seq.data_dir="{args.data}"',
                f'seq2seq.src_lang="{src}"', f'seq2seq.tgt_lang="{tgt}"',
                f"train.max_steps={args.steps}", f"train.max_minutes={args.minutes}",
                f'train.device="{args.device}"', f'train.dtype="{args.dtype}"']
        if args.no_test:
            over.append('seq2seq.test_split=""')
        cfg = RunConfig.load(None, over + args.overrides, preset="translation-small")
        t0 = time.time()
        run = train_task(cfg, overwrite=True)
        r = run.result
        print(run.report, flush=True)
        rows.append([pair, r.step, f"{r.elapsed_s:.0f}", f"{r.elapsed_s / max(r.step, 1):.3f}",
                     f"{r.tokens_per_s:,.0f}", f"{r.best_val_loss:.3f}" if r.best_val_loss else "-",
                     run.metrics.get("test_bleu", "-"), run.metrics.get("test_chrf", "-"),
                     f"{time.time() - t0:.0f}"])
    print(f"\nMulti30k, preset translation-small, device {args.device}, dtype {args.dtype}; "
          f"{machine()}")
    print(table(["pair", "steps", "train s", "s/step", "tok/s", "best val nll",
                 "test BLEU", "test chrF", "total s"], rows))


if __name__ == "__main__":
    main()
