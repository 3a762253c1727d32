"""Do sentiment classes show up as clusters? k-means (k = 2) on all-MiniLM-L6-v2 sentence
embeddings of SST-2 test sentences, scored against the sentiment labels (NMI, ARI) and by
silhouette, for the encoder as a head-only classifier leaves it (bit-identical to the
pretrained MiniLM; see tests/models/test_classifier.py) and for the encoder of a fully
fine-tuned SST-2 classifier.

Embeddings: mean pooling over real tokens, L2-normalised (all-MiniLM-L6-v2's own recipe),
max_len 64, for both encoders. The fully fine-tuned classifier is trained here (AdamW 5e-5,
batch 32, ``--epochs`` over the SST-2 training sentences, mean pooling as its head reads) or
taken from ``--full-model`` (e.g. runs/bench-sst2/full from bench/sst2_minilm.py).

    python bench/cluster_minilm.py [--epochs 1] [--full-model DIR] [--sentences 0]
    python bench/cluster_minilm.py --limit 200 --sentences 300   # smoke test
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, table  # noqa: E402
from bench.encoder_common import SST, classify_run, fmt_s, minilm_dir, timed  # noqa: E402
from lmforge.data.labeled import read_labeled  # noqa: E402
from lmforge.modeldir import load_model_dir  # noqa: E402
from lmforge.tasks.embed import cluster_embeddings, cluster_metrics, embed_texts  # noqa: E402


def fine_tune(init: Path, args) -> Path:
    n = args.limit or 6920
    steps = math.ceil(args.epochs * n / 32)
    run, t = classify_run([
        f'out_dir="{args.out}/full"', f"seed={args.seed}", f'classify.init_from="{init}"',
        f'classify.train="{SST / "stsa.binary.train"}"',
        f'classify.dev="{SST / "stsa.binary.dev"}"',
        f"classify.limit={args.limit}", "classify.max_len=64", 'classify.mode="full"',
        'classify.pooling="mean"', f"classify.epochs={args.epochs}", 'classify.metric="accuracy"',
        "train.batch_size=32", f"train.eval_every={max(1, steps // 4)}", "train.checkpoint_every=0",
        "train.lr=5e-5", 'train.schedule="linear"', "train.min_lr=0.0",
        f"train.warmup_steps={int(0.06 * steps)}", "train.weight_decay=0.01",
        "train.progress=false", f'train.device="{args.device}"'])
    print(f"fine-tuned in {fmt_s(t.wall)}: dev accuracy {run.metrics['dev_accuracy']:.4f}",
          flush=True)
    return run.out_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full-model", help="a fully fine-tuned classifier directory to use")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--limit", type=int, default=0, help="fine-tune on N training sentences")
    ap.add_argument("--sentences", type=int, default=0, help="cluster N test sentences (0 = 1,821)")
    ap.add_argument("--split", default="test", choices=["train", "dev", "test"])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="runs/bench-cluster")
    ap.add_argument("--minilm", default="runs/minilm")
    ap.add_argument("--device", default="auto", help="train.device for the fine-tuning")
    args = ap.parse_args()
    init = minilm_dir(args.minilm)
    full = Path(args.full_model) if args.full_model else fine_tune(init, args)
    data = read_labeled(SST / f"stsa.binary.{args.split}").sample(args.sentences, args.seed)
    y = np.array([int(v) for v in data.labels])
    rows = []
    for name, path in (("head-only (= pretrained MiniLM)", init), ("fully fine-tuned", full)):
        lm = load_model_dir(path)
        with timed() as t:
            emb = embed_texts(lm, data.texts, pooling="mean", normalize=True, max_len=64)
        for method in ("kmeans", "agglomerative"):
            m = cluster_metrics(emb, cluster_embeddings(emb, 2, method, args.seed), y)
            rows.append([name, method, f"{m['nmi']:.4f}", f"{m['ari']:.4f}",
                         f"{m['silhouette']:.4f}", fmt_s(t.wall)])
    print(f"\nSST-2 {args.split} sentences: {len(y)}, k = 2, mean-pooled L2-normalised embeddings")
    print(machine())
    print(table(["encoder", "clustering", "NMI", "ARI", "silhouette", "embed time"], rows))


if __name__ == "__main__":
    main()
