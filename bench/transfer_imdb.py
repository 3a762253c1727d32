"""Transfer learning, with numbers: a small BERT-style encoder pre-trained with masked-LM on
IMDB's review text (labels unused), then fine-tuned for sentiment on a few labelled reviews,
against the same encoder fine-tuned from random initialisation with the same budget (same
steps, learning rate, data, tokenizer). Scored on held-out test reviews that pre-training
never saw.

    python bench/transfer_imdb.py [--pretrain-steps 3000] [--labelled 2000] [--finetune-epochs 4]
                                  [--test-reviews 5000] [--device auto] [--out runs/bench-transfer]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, table  # noqa: E402
from bench.encoder_common import IMDB, classify_run, fmt_s, timed  # noqa: E402


def reviews(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps({"text": r["text"], "label": r["label"]}) + "\n"
                            for r in rows), encoding="utf-8")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(IMDB))
    ap.add_argument("--pretrain-steps", type=int, default=3000)
    ap.add_argument("--labelled", type=int, default=2000, help="labelled training reviews")
    ap.add_argument("--finetune-epochs", type=float, default=4.0)
    ap.add_argument("--test-reviews", type=int, default=5000)
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="runs/bench-transfer")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data)
    rng = random.Random(args.seed)
    train = reviews(data / "train.jsonl.gz")
    rng.shuffle(train)
    test = reviews(data / "test.jsonl.gz")
    rng.shuffle(test)
    (out / "unlabelled.txt").write_text("\n\n".join(r["text"].replace("<br />", " ") for r in train),
                                        encoding="utf-8")
    labelled = write_jsonl(train[:args.labelled], out / "labelled.jsonl")
    held_out = write_jsonl(test[:args.test_reviews], out / "test.jsonl")
    model = [f"model.d_model={args.d_model}", f"model.n_layer={args.layers}", "model.n_head=4",
             f"model.context_length={args.max_len}", 'model.arch="encoder"', "model.dropout=0.1",
             "model.type_vocab_size=2", "model.embed_norm=true", "model.prenorm=false",
             'model.activation="gelu"', "model.norm_eps=1e-12"]
    common = [f'train.device="{args.device}"', "train.progress=false", "train.checkpoint_every=0",
              f"seed={args.seed}"]

    from lmforge.tasks import train_task
    from lmforge.tasks import RunConfig

    pre = RunConfig.load(None, model + common + [
        f'out_dir="{out / "mlm"}"', f'data.path="{out / "unlabelled.txt"}"', "data.val_fraction=0.02",
        'tokenizer.kind="wordpiece"', "tokenizer.vocab_size=8000", 'model.heads="mlm"',
        "model.pooler=false", f"train.max_steps={args.pretrain_steps}", "train.batch_size=32",
        "train.lr=5e-4", "train.warmup_steps=200", "train.eval_every=1000", "train.min_lr=1e-5"])
    with timed() as t_pre:
        mlm = train_task(pre, overwrite=True)
    print(f"MLM pre-training: {mlm.result.step} steps, {fmt_s(t_pre.wall)}; held-out "
          f"{mlm.metrics}", flush=True)

    finetune = [f'classify.train="{labelled}"', f'classify.test="{held_out}"',
                'classify.format="jsonl"', "classify.dev_fraction=0.1",
                f"classify.max_len={args.max_len}", 'classify.truncation="head+tail"',
                f"classify.epochs={args.finetune_epochs}", 'classify.metric="accuracy"',
                'classify.pooling="mean"', "train.batch_size=32", "train.lr=1e-4",
                "train.warmup_steps=30", 'train.schedule="linear"', "train.min_lr=0.0",
                "train.eval_every=50", "train.weight_decay=0.01"] + common
    rows = []
    for name, init in (("MLM pre-trained", [f'classify.init_from="{mlm.out_dir}"']),
                       ("random init", model + [f'tokenizer.path="{mlm.out_dir / "tokenizer.json"}"',
                                                'model.heads="mlm"', "model.pooler=false"])):
        run, t = classify_run(init + finetune + [f'out_dir="{out / name.split()[0].lower()}"'])
        m = run.metrics
        rows.append([name, str(run.result.step), fmt_s(t.wall), f"{m['test_accuracy']:.4f}",
                     f"{m['test_macro_f1']:.4f}", f"{m['dev_accuracy']:.4f}"])
        print(rows[-1], flush=True)
    n_params = mlm.model.num_params()
    print(f"\nIMDB transfer learning: encoder {args.layers} layers x {args.d_model} "
          f"({n_params / 1e6:.1f}M params with the MLM head), WordPiece 8k; MLM on "
          f"{len(train):,} training reviews for {args.pretrain_steps} steps ({fmt_s(t_pre.wall)}); "
          f"fine-tuned on {args.labelled:,} labelled reviews; {args.test_reviews:,} test reviews; "
          f"device {args.device}")
    print(machine())
    print(table(["encoder", "fine-tune steps", "fine-tune wall", "test acc", "test macro-F1",
                 "dev acc (best)"], rows))


if __name__ == "__main__":
    main()
