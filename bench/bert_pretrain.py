"""BERT-style pre-training from scratch, masked LM + next-sentence prediction, on IMDB's review
text (labels unused): held-out masked-token accuracy and next-sentence accuracy as training
goes on, against chance (NSP pairs are half real continuations, half random: 0.5).

Corpus: the 25,000 training reviews of ../shared/data/imdb, one document each (split into
sentences); the last 2% are held out whole. Model: a 4-layer, 256-wide post-norm encoder
with segment embeddings, WordPiece 8k trained on the corpus, 128-token pairs, batch 32,
AdamW 5e-4 with warmup and cosine decay. Every --eval-every steps 20 held-out batches
(640 pairs) are scored; the curve is drawn to OUT/pretrain_curve.png.

    python bench/bert_pretrain.py [--steps 4000] [--eval-every 500] [--device auto]
    python bench/bert_pretrain.py --steps 60 --eval-every 30 --reviews 2000   # smoke test
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, table  # noqa: E402
from bench.encoder_common import IMDB, fmt_s, timed  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--reviews", type=int, default=0, help="use the first N reviews (0 = all)")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="runs/bench-bert-pretrain")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with gzip.open(IMDB / "train.jsonl.gz", "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"].replace("<br />", " ") for line in f]
    texts = texts[:args.reviews or None]
    corpus = out / "reviews.txt"
    corpus.write_text("\n\n".join(texts), encoding="utf-8")  # a blank line ends a document

    from lmforge.tasks import train_task
    from lmforge.tasks import RunConfig

    cfg = RunConfig.load(None, [
        f'out_dir="{out / "model"}"', f"seed={args.seed}", f'data.path="{corpus}"',
        "data.val_fraction=0.02", 'tokenizer.kind="wordpiece"', "tokenizer.vocab_size=8000",
        'model.arch="encoder"', "model.d_model=256", "model.n_layer=4", "model.n_head=4",
        f"model.context_length={args.seq}", "model.type_vocab_size=2", "model.embed_norm=true",
        "model.prenorm=false", 'model.activation="gelu"', "model.norm_eps=1e-12",
        "model.dropout=0.1", 'model.heads="mlm+nsp"', "model.pooler=true",
        f"train.max_steps={args.steps}", "train.batch_size=32", "train.lr=5e-4",
        "train.warmup_steps=200", "train.min_lr=1e-5", f"train.eval_every={args.eval_every}",
        "train.eval_batches=20", "train.checkpoint_every=0", "train.progress=false",
        f'train.device="{args.device}"'])
    with timed() as t:
        run = train_task(cfg, overwrite=True)
    evals = [json.loads(line) for line in (run.out_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in evals if e.get("split") == "val" and "nsp_accuracy" in e]
    rows = [[str(e["step"]), f"{e['elapsed_s'] / 60:.1f} min", f"{e['mlm_accuracy']:.4f}",
             f"{e['nsp_accuracy']:.4f}", f"{e['loss']:.3f}"] for e in evals]

    from lmforge.viz.figure import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [e["step"] for e in evals]
    ax.plot(steps, [e["mlm_accuracy"] for e in evals], marker="o", label="masked-token accuracy")
    ax.plot(steps, [e["nsp_accuracy"] for e in evals], marker="o", label="next-sentence accuracy")
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="NSP chance")
    ax.set_xlabel("step")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1)
    ax.legend()
    save_figure(fig, out / "pretrain_curve.png")
    m = run.metrics
    print(f"\nMLM + NSP pre-training on {len(texts):,} IMDB reviews: encoder 4 x 256 "
          f"({run.model.num_params() / 1e6:.1f}M params), {args.steps} steps of 32 pairs x "
          f"{args.seq} tokens, {fmt_s(t.wall)} wall; held out {m.get('pairs', 0)} pairs, "
          f"{m.get('masked_tokens', 0)} masked tokens; curve: {out / 'pretrain_curve.png'}")
    print(machine())
    print(table(["step", "train time", "MLM accuracy", "NSP accuracy (chance 0.5)", "val loss"],
                rows))


if __name__ == "__main__":
    main()
