"""``lmforge embed``: sentence embeddings of a file to ``.npy``, optionally clustered, scored
against the labels and plotted (:func:`lmforge.tasks.embed.embed_file`)."""

from __future__ import annotations

import argparse

from ..tasks.embed import embed_file
from .arguments import labeled_data_arguments, labeled_data_options, non_negative_int
from .output import say, write_json
from .registry import Command


def embed(model_dir: str, data: str, out: str, **kw) -> dict:
    """Write embeddings of ``data`` to ``out``; optional clustering and plot (see
    :func:`lmforge.tasks.embed.embed_file` for the keyword arguments)."""
    r = embed_file(model_dir, data, out, **kw)
    n, c = r.embeddings.shape
    say(f"embedded {n} texts -> {r.out} ({n} x {c} float32, {r.pooling} pooling"
        f"{', L2-normalised' if r.normalize else ''})")
    if r.metrics:
        m = r.metrics
        line = f"  {kw.get('method', 'kmeans')}, {m['clusters']} clusters"
        for key, name in (("silhouette", "silhouette"), ("ari", "ARI"), ("nmi", "NMI")):
            if key in m:
                line += f", {name} {m[key]:.4f}"
        say(line)
    if r.plot:
        say(f"  plot             {r.plot}")
    return {"model_dir": str(model_dir), "data": str(data), "out": str(r.out), "n": n, "dim": c,
            "pooling": r.pooling, "normalize": r.normalize, "metrics": r.metrics,
            "plot": str(r.plot) if r.plot else None,
            "clusters": r.clusters.tolist() if r.clusters is not None else None}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir")
    p.add_argument("--data", required=True, help="texts: CSV, TSV, JSONL, .txt (one a line), "
                   "'label text' lines; labels, when present, score the clusters (ARI/NMI)")
    p.add_argument("--out", required=True, help="embeddings file to write (.npy, N x C float32)")
    p.add_argument("--pooling", choices=["cls", "mean", "max"],
                   help="default: what the model records (MiniLM: mean), else mean")
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                   help="L2-normalise (default: what the model records, else no)")
    p.add_argument("--max-len", type=non_negative_int, default=0,
                   help="tokens per text (default 256)")
    p.add_argument("--truncation", default="head", choices=["head", "tail", "head+tail"])
    p.add_argument("--clusters", type=non_negative_int, default=0, metavar="K",
                   help="cluster into K groups")
    p.add_argument("--method", default="kmeans", choices=["kmeans", "agglomerative"])
    p.add_argument("--plot", help="PNG of a 2-D projection coloured by cluster (or label)")
    p.add_argument("--projection", default="pca", choices=["pca", "tsne"])
    p.add_argument("--seed", type=int, default=0)
    labeled_data_arguments(p)


def run(args: argparse.Namespace) -> None:
    result = embed(args.model_dir, args.data, args.out, pair_column=args.text_pair_column,
                   pooling=args.pooling, normalize=args.normalize, max_len=args.max_len,
                   truncation=args.truncation, clusters=args.clusters, method=args.method,
                   plot=args.plot, projection=args.projection, seed=args.seed,
                   **labeled_data_options(args))
    write_json(result, args.json)


COMMANDS = [Command("embed", "sentence embeddings of a file (.npy), optionally clustered and "
                    "plotted", add_arguments, run)]
