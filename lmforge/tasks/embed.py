"""Sentence embeddings from an encoder model directory, clustering them (scikit-learn), and a
2-D picture of the clusters: what ``lmforge embed`` runs.

Pooling and normalisation default to what the model directory records: a sentence-transformers
import (MiniLM) says how it pools and whether it L2-normalises (``meta.json``,
``"sentence_embedding"``); a classifier pools as its head does; anything else mean-pools
without normalising.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.encode import encode_texts
from ..data.labeled import read_labeled
from ..errors import ConfigError
from ..inference.encoder import encoder_of, sentence_embeddings
from ..modeldir import LoadedModel, load_model_dir
from ..viz import plot_embedding_clusters

CLUSTER_METHODS = ("kmeans", "agglomerative")
PROJECTIONS = ("pca", "tsne")


def embedding_defaults(lm: LoadedModel) -> tuple[str, bool]:
    """(pooling, normalize) the model directory records, else ("mean", False)."""
    sent = lm.meta.sentence_embedding
    if sent is not None and sent.pooling:
        return sent.pooling, sent.normalize
    if lm.config.heads == "classifier":
        return lm.config.classifier_pooling or "cls", False
    return "mean", False


def embed_texts(lm: LoadedModel, texts: Sequence[str], pairs: Sequence[str] | None = None, *,
                pooling: str | None = None, normalize: bool | None = None, max_len: int = 0,
                truncation: str = "head", batch_size: int = 64,
                device: str = "cpu") -> np.ndarray:  # (N, C) float32
    """Embeddings of ``texts`` (``[CLS] text [SEP]``, at most ``max_len`` tokens; 0 = the
    classifier's max_len, else min(context, 256)); None pooling/normalize = the defaults."""
    encoder_of(lm.model)  # refuses decoders before their tokenizer is blamed
    default_pool, default_norm = embedding_defaults(lm)
    if not max_len:
        max_len = (lm.meta.classifier.max_len if lm.meta.classifier else None) or 256
    max_len = min(max_len, lm.config.context_length)
    enc = encode_texts(lm.tokenizer, texts, pairs, max_len=max_len, truncation=truncation)
    emb = sentence_embeddings(lm.model, enc, pooling or default_pool,
                              default_norm if normalize is None else normalize, batch_size, device)
    return emb.numpy()


def cluster_embeddings(emb: np.ndarray, k: int, method: str = "kmeans",
                       seed: int = 0) -> np.ndarray:  # (N,)
    """Cluster ids (N,) of ``emb`` (N, C): k-means (10 restarts) or Ward agglomerative."""
    if method not in CLUSTER_METHODS:
        raise ConfigError(f"clustering method {method!r} is unknown; choose one of "
                          f"{', '.join(CLUSTER_METHODS)}")
    if not 2 <= k <= len(emb):
        raise ConfigError(f"--clusters {k}: need 2 <= K <= the number of texts ({len(emb)})")
    if method == "kmeans":
        from sklearn.cluster import KMeans

        return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(emb)
    from sklearn.cluster import AgglomerativeClustering

    return AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(emb)


def cluster_metrics(emb: np.ndarray, clusters: np.ndarray,
                    labels: Sequence | None = None) -> dict:
    """silhouette (cosine-free, Euclidean; needs 2..N-1 clusters) and, with true ``labels``,
    the adjusted Rand index and normalised mutual information against them."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score

    out: dict = {"n": int(len(emb)), "clusters": int(len(np.unique(clusters)))}
    if 2 <= out["clusters"] < len(emb):
        out["silhouette"] = float(silhouette_score(emb, clusters))
    if labels is not None:
        out["ari"] = float(adjusted_rand_score(labels, clusters))
        out["nmi"] = float(normalized_mutual_info_score(labels, clusters))
    return out


def project_2d(emb: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:  # (N, 2)
    if method not in PROJECTIONS:
        raise ConfigError(f"projection {method!r} is unknown; choose one of "
                          f"{', '.join(PROJECTIONS)}")
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(emb)
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(2.0, (len(emb) - 1) / 3)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return tsne.fit_transform(emb)


@dataclass
class EmbedReport:
    embeddings: np.ndarray  # (N, C)
    pooling: str
    normalize: bool
    out: Path
    clusters: np.ndarray | None = None  # (N,)
    metrics: dict = field(default_factory=dict)
    plot: Path | None = None


def embed_file(model_dir: str | Path, data: str | Path, out: str | Path, *, fmt: str = "auto",
               text_column: str = "text", label_column: str = "label",
               pair_column: str | None = None, pooling: str | None = None,
               normalize: bool | None = None, max_len: int = 0, truncation: str = "head",
               clusters: int = 0, method: str = "kmeans", plot: str | Path | None = None,
               projection: str = "pca", seed: int = 0, batch_size: int = 64,
               device: str = "cpu") -> EmbedReport:
    """Embed every text of ``data`` -> ``out`` (.npy, (N, C) float32); with ``clusters`` K,
    cluster them and score the clusters (silhouette; ARI/NMI when the file has labels); with
    ``plot``, draw a 2-D projection coloured by cluster (or by label without clustering)."""
    lm = load_model_dir(model_dir, device=device)
    rows = read_labeled(data, fmt=fmt, text_column=text_column, label_column=label_column,
                        pair_column=pair_column, labels="optional")
    pooling = pooling or embedding_defaults(lm)[0]
    normalize = embedding_defaults(lm)[1] if normalize is None else normalize
    emb = embed_texts(lm, rows.texts, rows.pairs, pooling=pooling, normalize=normalize,
                      max_len=max_len, truncation=truncation, batch_size=batch_size, device=device)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, emb)
    report = EmbedReport(emb, pooling, normalize, out)
    names, label_ids = None, None
    if rows.labels is not None:
        names, label_ids = np.unique(np.asarray(rows.labels), return_inverse=True)
    if clusters:
        report.clusters = cluster_embeddings(emb, clusters, method, seed)
        report.metrics = cluster_metrics(emb, report.clusters, label_ids)
    if plot:
        if report.clusters is not None:
            colour, legend = report.clusters, None
        elif label_ids is not None:
            colour, legend = label_ids, names
        else:
            colour, legend = np.zeros(len(emb), dtype=int), ["texts"]
        what = f"{method} clusters" if report.clusters is not None else "labels"
        report.plot = plot_embedding_clusters(
            project_2d(emb, projection, seed), colour, plot, names=legend,
            title=f"{Path(model_dir).name}: {Path(data).name}, {projection.upper()} ({what})")
    return report
