"""`lmforge train` (task = "classify"), `lmforge classify` and `lmforge embed` end to end on
a tiny encoder, and their one-line messages for bad input."""

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from encoder_helpers import synthetic_rows, write_csv

from lmforge.cli.main import main

CLASSES = ("pos", "neg", "mid")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data")
    write_csv(d / "train.csv", synthetic_rows(240, 0, CLASSES))
    write_csv(d / "dev.csv", synthetic_rows(45, 1, CLASSES))
    write_csv(d / "test.csv", [(lab, t) for t, lab in synthetic_rows(30, 2, CLASSES)],
              header=("sentiment", "review"))
    return d


@pytest.fixture(scope="module")
def trained(tmp_path_factory, files) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("run")
    cfg = root / "clf.toml"
    cfg.write_text(
        f'out_dir = "{root / "model"}"\nseed = 5\ntask = "classify"\n'
        "[model]\narch = \"encoder\"\nd_model = 32\nn_layer = 1\nn_head = 2\ncontext_length = 32\n"
        "type_vocab_size = 2\n"
        "[tokenizer]\nkind = \"wordpiece\"\nvocab_size = 200\n"
        f'[classify]\ntrain = "{files / "train.csv"}"\ndev = "{files / "dev.csv"}"\n'
        "max_len = 24\nepochs = 5\npatience = 3\n"
        "[train]\nbatch_size = 16\nlr = 3e-3\nwarmup_steps = 5\neval_every = 15\n"
        "checkpoint_every = 30\nprogress = false\ndtype = \"float32\"\n", encoding="utf-8")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["train", str(cfg)]) == 0
    return root / "model", printed.getvalue()


@pytest.fixture(scope="module")
def model(trained) -> Path:
    return trained[0]


def test_train_prints_the_dev_report(trained):
    model, printed = trained
    assert "dev (45 rows): accuracy" in printed and "majority-class baseline" in printed
    assert "true \\ pred" in printed and "dev_accuracy" in printed and "perplexity" not in printed
    meta = json.loads((model / "meta.json").read_text())
    assert meta["classifier"]["labels"] == ["mid", "neg", "pos"]
    assert meta["eval"]["dev"]["accuracy"] >= 0.9
    assert (model / "confusion_dev.png").is_file()


def test_classify_texts(model, capsys):
    assert main(["classify", str(model), "--text", "the film was superb and lovely",
                 "--text", "a dull awful plot", "--text", "an average and plain story"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split()[0] for ln in lines] == ["pos", "neg", "mid"]
    assert all("p=" in ln and "mid: " in ln and "pos: " in ln for ln in lines)


def test_classify_a_labelled_file_prints_the_metrics(model, files, tmp_path, capsys):
    out = tmp_path / "pred.json"
    assert main(["classify", str(model), "--data", str(files / "test.csv"), "--text-column",
                 "review", "--label-column", "sentiment", "--show", "2", "--json", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "... 28 more rows" in shown and "accuracy" in shown and "true \\ pred" in shown
    res = json.loads(out.read_text())
    assert len(res["predictions"]) == 30 and res["metrics"]["accuracy"] >= 0.9
    assert sum(map(sum, res["metrics"]["confusion_matrix"])) == 30


def test_embed_with_clusters_and_plot(model, files, tmp_path, capsys):
    args = ["embed", str(model), "--data", str(files / "test.csv"), "--text-column", "review",
            "--label-column", "sentiment", "--out", str(tmp_path / "e.npy"), "--pooling", "mean",
            "--normalize", "--clusters", "3", "--method", "agglomerative", "--plot",
            str(tmp_path / "c.png"), "--projection", "tsne", "--json", str(tmp_path / "e.json")]
    assert main(args) == 0
    shown = capsys.readouterr().out
    assert "embedded 30 texts" in shown and "L2-normalised" in shown and "NMI" in shown
    emb = np.load(tmp_path / "e.npy")
    assert emb.shape == (30, 32) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    res = json.loads((tmp_path / "e.json").read_text())
    assert res["metrics"]["nmi"] > 0.3 and len(res["clusters"]) == 30  # fine-tuned: by class
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_bad_input_messages(model, files, tmp_path, capsys):
    bad = write_csv(tmp_path / "bad.csv", [("a good film", "pos"), ("whatever", "meh")])
    assert main(["classify", str(model), "--data", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmforge classify: error:") and "bad.csv: row 3, column 'label'" in err
    assert main(["embed", str(model), "--data", str(files / "test.csv"), "--out",
                 str(tmp_path / "x.npy")]) == 2
    err = capsys.readouterr().err
    assert "column 'text'" in err and "'sentiment', 'review'" in err
    mlm = tmp_path / "mlm"
    from lmforge.modeldir import load_model_dir, save_model_dir
    from lmforge.models import MaskedLM

    lm = load_model_dir(model)
    cfg = lm.config.__class__(**{**lm.config.__dict__, "heads": "mlm", "pooler": False,
                                 "n_classes": None, "classifier_pooling": None})
    save_model_dir(mlm, MaskedLM(cfg), lm.tokenizer)
    assert main(["classify", str(mlm), "--text", "hello"]) == 2
    assert "not a classifier" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["classify", str(model)])  # neither --text nor --data
