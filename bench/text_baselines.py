"""Text baselines on SST-2 and IMDB: RNN vs LSTM vs GRU vs text CNN vs a small Transformer
encoder (all trained from scratch) vs pre-trained all-MiniLM-L6-v2 (fine-tuned), each given the
same wall-clock budget on the CPU (``train.max_minutes``): test accuracy, parameters, training
time, tokens/s, and on IMDB accuracy on short vs long reviews (split at the median length).

Only ``model.arch`` differs between the from-scratch runs (docs/baselines.md).

    python bench/text_baselines.py                                   # ~10 min: 6 models x 2 sets x 45 s
    python bench/text_baselines.py --minutes 0.1 --limit 300 --eval-limit 200 --sets sst2  # smoke
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, table  # noqa: E402
from bench.encoder_common import IMDB, SST, classify_run, minilm_dir  # noqa: E402

ARCHS = ["rnn", "lstm", "gru", "text_cnn", "encoder", "minilm"]
RESULTS = Path(__file__).resolve().parent / "results"


def imdb_files(work: Path, n_train: int, n_test: int) -> tuple[Path, Path]:
    """IMDB train/test as plain JSONL (the shared copies are gzipped), first N rows each."""
    work.mkdir(parents=True, exist_ok=True)
    out = []
    for name, n in (("train", n_train), ("test", n_test)):
        rows = [json.loads(x) for x in gzip.open(IMDB / f"{name}.jsonl.gz", "rt")]
        import random
        random.Random(0).shuffle(rows)
        p = work / f"imdb_{name}.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in rows[:n]))
        out.append(p)
    return out[0], out[1]


def overrides(arch: str, data: dict, args, out: Path) -> list[str]:
    ov = [f'out_dir="{out}"', "seed=0", f'classify.train="{data["train"]}"',
          f'classify.test="{data["test"]}"', f"classify.dev_fraction=0.1",
          f"classify.limit={args.limit}", f"classify.eval_limit={args.eval_limit}",
          f"classify.max_len={data['max_len']}", 'classify.metric="accuracy"',
          f"train.max_minutes={args.minutes}", "train.max_steps=100000",
          f"train.batch_size={args.batch_size}", "train.eval_every=200",
          "train.checkpoint_every=0", "train.progress=false", 'train.dtype="float32"']
    if arch == "minilm":
        return ov + [f'classify.init_from="{minilm_dir(args.minilm)}"', "train.lr=5e-5",
                     "train.warmup_steps=20"]
    ov += [f'model.arch="{arch}"', "model.d_model=128", "model.n_layer=1" if arch != "encoder"
           else "model.n_layer=2", "model.n_head=4", f"model.context_length={data['max_len']}",
           'tokenizer.kind="wordpiece"', "tokenizer.vocab_size=8000", "train.lr=2e-3",
           "train.warmup_steps=20"]
    if arch in ("lstm", "gru", "rnn"):
        ov.append("model.bidirectional=true")
    return ov


def by_length(out: Path, test: Path) -> tuple[float, float]:
    """Test accuracy on the shorter and the longer half of the test reviews."""
    from lmforge.inference import Classifier
    from lmforge.data.labeled import read_labeled

    rows = read_labeled(str(test))
    clf = Classifier.load(out)
    pred = clf.predict(rows.texts)
    lens = [len(t.split()) for t in rows.texts]
    med = sorted(lens)[len(lens) // 2]
    acc = lambda keep: sum(p == y for p, y, k in zip(pred, rows.labels, keep) if k) / max(1, sum(keep))  # noqa: E731
    return acc([n < med for n in lens]), acc([n >= med for n in lens])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default="sst2,imdb")
    ap.add_argument("--archs", default=",".join(ARCHS))
    ap.add_argument("--minutes", type=float, default=0.75, help="training budget per model")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--eval-limit", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", default="runs/text_baselines")
    ap.add_argument("--minilm", default="runs/minilm")
    args = ap.parse_args()
    out = Path(args.out)
    rows, plot = [], {}
    for name in args.sets.split(","):
        if name == "sst2":
            data = {"train": SST / "stsa.binary.train", "test": SST / "stsa.binary.test", "max_len": 64}
        else:
            tr, te = imdb_files(out / "data", 5000, 2000)
            data = {"train": tr, "test": te, "max_len": 256}
        for arch in args.archs.split(","):
            run, t = classify_run(overrides(arch, data, args, out / name / arch))
            res = json.loads((run.out_dir / "result.json").read_text())
            meta = json.loads((run.out_dir / "meta.json").read_text())
            short = long = float("nan")
            if name == "imdb":
                short, long = by_length(run.out_dir, data["test"])
            acc = run.metrics.get("test_accuracy", float("nan"))
            plot.setdefault(name, []).append((arch, acc))
            rows.append([name, arch, f"{acc:.3f}", f"{meta.get('parameters', 0):,}",
                         f"{res['elapsed_s']:.0f} s", f"{res['tokens_per_s']:.0f}",
                         f"{short:.3f}", f"{long:.3f}"])
            print(rows[-1], flush=True)
    print(f"\n{machine()}; budget {args.minutes} min per model\n")
    print(table(["set", "model", "test acc", "params", "train time", "tokens/s",
                 "short", "long"], rows))
    from lmforge.viz.figure import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, len(plot), figsize=(5 * len(plot), 3.5), squeeze=False)
    for ax, (name, pts) in zip(axes[0], plot.items()):
        ax.bar([a for a, _ in pts], [v for _, v in pts])
        ax.set_title(f"{name}: test accuracy, {args.minutes} min each")
        ax.set_ylim(0.4, 1.0)
    print("plot:", save_figure(fig, RESULTS / "text_baselines.png"))


if __name__ == "__main__":
    main()
