"""``lmforge classify`` and ``lmforge embed``: encoder commands as plain functions, plus
their argument parsers (``lmforge.cli.main`` adds them with :func:`add_encoder_parsers` and
hands the parsed arguments to :func:`run_encoder_command`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ConfigError

ENCODER_COMMANDS = ("classify", "embed")


def _print(*a) -> None:
    print(*a, flush=True)


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", default="auto",
                   choices=["auto", "csv", "tsv", "jsonl", "text", "label-text"],
                   help="auto = by extension: .csv .tsv .jsonl, .txt (one text a line), "
                        "anything else 'label text' lines (SST)")
    p.add_argument("--text-column", default="text")
    p.add_argument("--text-pair-column", help="second text column (sentence pairs)")
    p.add_argument("--label-column", default="label")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the results to this JSON file")


def add_encoder_parsers(sub) -> None:
    c = sub.add_parser("classify", help="label texts with a fine-tuned classifier (and score it "
                       "on a labelled file)")
    c.add_argument("model_dir")
    src = c.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", action="append", help="a text to classify (repeatable)")
    src.add_argument("--data", help="a file of texts (CSV, TSV, JSONL, .txt, 'label text' lines); "
                     "with labels the metrics are printed too")
    c.add_argument("--show", type=int, default=10, help="predictions to print for --data")
    _data_args(c)

    e = sub.add_parser("embed", help="sentence embeddings of a file (.npy), optionally "
                       "clustered and plotted")
    e.add_argument("model_dir")
    e.add_argument("--data", required=True, help="texts: CSV, TSV, JSONL, .txt (one a line), "
                   "'label text' lines; labels, when present, score the clusters (ARI/NMI)")
    e.add_argument("--out", required=True, help="embeddings file to write (.npy, N x C float32)")
    e.add_argument("--pooling", choices=["cls", "mean", "max"],
                   help="default: what the model records (MiniLM: mean), else mean")
    e.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                   help="L2-normalise (default: what the model records, else no)")
    e.add_argument("--max-len", type=int, default=0, help="tokens per text (default 256)")
    e.add_argument("--truncation", default="head", choices=["head", "tail", "head+tail"])
    e.add_argument("--clusters", type=int, default=0, metavar="K", help="cluster into K groups")
    e.add_argument("--method", default="kmeans", choices=["kmeans", "agglomerative"])
    e.add_argument("--plot", help="PNG of a 2-D projection coloured by cluster (or label)")
    e.add_argument("--projection", default="pca", choices=["pca", "tsne"])
    e.add_argument("--seed", type=int, default=0)
    _data_args(e)


def classify(model_dir: str, texts: list[str] | None = None, data: str | None = None, *,
             fmt: str = "auto", text_column: str = "text", label_column: str = "label",
             text_pair_column: str | None = None, batch_size: int = 64, device: str = "cpu",
             show: int = 10) -> dict:
    """Predicted label and class probabilities per text; with a labelled ``data`` file also
    accuracy, macro-F1, the confusion matrix and the classification report."""
    from ..data.labeled import LabelVocab, read_labeled
    from ..evaluation import classification_metrics, format_confusion
    from ..inference import Classifier

    if bool(texts) == bool(data):
        raise ConfigError("give texts (--text, repeatable) or a file (--data), not both")
    clf = Classifier.load(model_dir, device=device)
    rows = None
    if data:
        rows = read_labeled(data, fmt=fmt, text_column=text_column, label_column=label_column,
                            pair_column=text_pair_column, labels="optional")
        texts = rows.texts
    probs = clf.predict_proba(texts, rows.pairs if rows else None, batch_size)  # (N, K)
    pred = probs.argmax(-1)
    preds = [{"text": t, "label": clf.labels[k],
              "probabilities": {lab: round(float(p), 6) for lab, p in zip(clf.labels, pr)}}
             for t, k, pr in zip(texts, pred, probs)]
    shown = preds if data is None else preds[:show]
    for r in shown:
        dist = "  ".join(f"{lab}: {p:.3f}" for lab, p in r["probabilities"].items())
        text = r["text"] if len(r["text"]) <= 70 else r["text"][:67] + "..."
        _print(f"{r['label']:<12} p={r['probabilities'][r['label']]:.3f}   [{dist}]   {text}")
    if data and len(preds) > len(shown):
        _print(f"... {len(preds) - len(shown)} more rows (all of them: --json FILE)")
    result: dict = {"model_dir": str(model_dir), "labels": clf.labels, "predictions": preds}
    if rows is not None and rows.labels is not None:
        y = LabelVocab(clf.labels).encode(rows)  # unknown labels: file, row and column named
        m = classification_metrics(y, pred, clf.labels)
        result["metrics"] = m
        _print(f"\n{data}: {m['n']} rows, accuracy {m['accuracy']:.4f}, "
               f"macro-F1 {m['macro_f1']:.4f}")
        _print(format_confusion(m["confusion_matrix"], clf.labels))
        _print("\n" + m["report"])
    return result


def embed(model_dir: str, data: str, out: str, **kw) -> dict:
    """Write embeddings of ``data`` to ``out``; optional clustering and plot (see
    :func:`lmforge.tasks.embed.embed_file` for the keyword arguments)."""
    from ..tasks.embed import embed_file

    r = embed_file(model_dir, data, out, **kw)
    n, c = r.embeddings.shape
    _print(f"embedded {n} texts -> {r.out} ({n} x {c} float32, {r.pooling} pooling"
           f"{', L2-normalised' if r.normalize else ''})")
    if r.metrics:
        m = r.metrics
        line = f"  {kw.get('method', 'kmeans')}, {m['clusters']} clusters"
        for key, name in (("silhouette", "silhouette"), ("ari", "ARI"), ("nmi", "NMI")):
            if key in m:
                line += f", {name} {m[key]:.4f}"
        _print(line)
    if r.plot:
        _print(f"  plot             {r.plot}")
    return {"model_dir": str(model_dir), "data": str(data), "out": str(r.out), "n": n, "dim": c,
            "pooling": r.pooling, "normalize": r.normalize, "metrics": r.metrics,
            "plot": str(r.plot) if r.plot else None,
            "clusters": r.clusters.tolist() if r.clusters is not None else None}


def run_encoder_command(args: argparse.Namespace) -> dict:
    """Dispatch parsed ``classify``/``embed`` arguments; writes ``--json`` when given."""
    common = dict(fmt=args.format, text_column=args.text_column, label_column=args.label_column,
                  batch_size=args.batch_size, device=args.device)
    if args.command == "classify":
        res = classify(args.model_dir, args.text, args.data, text_pair_column=args.text_pair_column,
                       show=args.show, **common)
    else:
        res = embed(args.model_dir, args.data, args.out, pair_column=args.text_pair_column,
                    pooling=args.pooling, normalize=args.normalize, max_len=args.max_len,
                    truncation=args.truncation, clusters=args.clusters, method=args.method,
                    plot=args.plot, projection=args.projection, seed=args.seed, **common)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str), encoding="utf-8")
    return res
