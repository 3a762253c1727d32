"""`task = "classify"` end to end on synthetic labelled text with a tiny encoder: the model
directory and the evaluation files, exact resume, init from an MLM-pretrained encoder in
head-only mode (encoder untouched; cached features = running the encoder every step), class
weights, truncation, and the config errors."""

import json
from pathlib import Path

import pytest
import torch
from encoder_helpers import (synthetic_rows, tiny_classify_overrides, write_csv,
                             write_tiny_mlm_dir)
from safetensors.torch import load_file

from lmforge.errors import ConfigError, DataError
from lmforge.inference import Classifier
from lmforge.modeldir import load_model_dir
from lmforge.models import SequenceClassifier
from lmforge.tasks import train_task
from lmforge.tasks import RunConfig


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("syn")
    write_csv(d / "train.csv", synthetic_rows(200, 0))
    write_csv(d / "dev.csv", synthetic_rows(60, 1))
    write_csv(d / "test.csv", synthetic_rows(60, 2))
    return d


def run(out, data, **kw):
    ov = tiny_classify_overrides(out, data / "train.csv", data / "dev.csv", **kw)
    cfg = RunConfig.load(None, ov)
    return train_task(cfg, overwrite=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("clf") / "model"
    return run(out, data, classify__test=f'"{data / "test.csv"}"', model__dropout=0.1)


def test_writes_a_classifier_model_directory(trained):
    out = trained.out_dir
    for name in ("config.json", "model.safetensors", "tokenizer.json", "meta.json", "eval.json",
                 "confusion_dev.png", "confusion_test.png", "loss.png", "metrics.jsonl",
                 "run.toml"):
        assert (out / name).is_file(), name
    meta = json.loads((out / "meta.json").read_text())
    assert meta["task"] == "classify" and meta["classifier"]["labels"] == ["neg", "pos"]
    assert meta["data"]["train"]["class_counts"] == {"neg": 100, "pos": 100}
    ev = json.loads((out / "eval.json").read_text())
    assert ev["dev"]["accuracy"] >= 0.95 and ev["test"]["accuracy"] >= 0.95
    assert ev["test"]["majority_baseline"] == 0.5
    assert sum(map(sum, ev["test"]["confusion_matrix"])) == 60
    assert set(ev["test"]["per_class"]) == {"neg", "pos"} and "precision" in ev["test"]["report"]
    assert meta["eval"]["test"]["accuracy"] == ev["test"]["accuracy"]
    assert trained.metrics["best_step"] == ev["best_step"] == meta["training"]["best_step"]
    assert "true \\ pred" in trained.report
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("macro_f1" in r for r in rows if r["split"] == "val")


def test_the_saved_weights_are_the_best_evaluation(trained):
    lm = load_model_dir(trained.out_dir)
    assert isinstance(lm.model, SequenceClassifier)
    clf = Classifier.load(trained.out_dir)
    assert clf.predict(["the film was really great", "a dull and awful plot"]) == ["pos", "neg"]
    probs = clf.predict_proba(["the plot was superb"])
    assert probs.shape == (1, 2) and abs(probs.sum() - 1) < 1e-5
    ev = json.loads((trained.out_dir / "eval.json").read_text())
    val = [json.loads(x) for x in (trained.out_dir / "metrics.jsonl").read_text().splitlines()
           if '"val"' in x]
    best = next(r for r in val if r["step"] == ev["best_step"])
    assert best["macro_f1"] == pytest.approx(ev["dev"]["macro_f1"], abs=1e-6)


def test_resume_is_exact(tmp_path, data, trained):
    tok = trained.out_dir / "tokenizer.json"  # the same tokenizer for both runs
    kw = dict(tokenizer__path=f'"{tok}"', model__dropout=0.1)
    full = run(tmp_path / "full", data, **kw)
    cfg = RunConfig.load(None, tiny_classify_overrides(tmp_path / "cut", data / "train.csv",
                                                       data / "dev.csv", **kw))
    train_task(cfg, stop_at=30)  # "killed" after step 30 (checkpoint at 20)
    resumed = train_task(cfg, resume=True)
    assert resumed.result.step == full.result.step == 60
    a, b = (load_file(tmp_path / d / "model.safetensors") for d in ("full", "cut"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.metrics == full.metrics


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory, data) -> Path:
    """A (randomly initialised) masked-LM encoder directory, as `lmforge train` writes."""
    return write_tiny_mlm_dir(tmp_path_factory.mktemp("mlm") / "mlm", data / "train.csv")


def test_head_only_from_an_mlm_encoder_keeps_it_bit_identical(tmp_path, data, mlm_dir):
    kw = dict(classify__init_from=f'"{mlm_dir}"', classify__mode='"head-only"',
              classify__pooling='"mean"', train__lr=0.05, train__max_steps=40)
    cached = run(tmp_path / "cached", data, **kw)
    direct = run(tmp_path / "direct", data, classify__cache_features="false", **kw)
    enc = load_file(mlm_dir / "model.safetensors")
    for out in (cached.out_dir, direct.out_dir):
        got = load_file(out / "model.safetensors")
        assert all(torch.equal(got[k], v) for k, v in enc.items() if k.startswith("encoder."))
        head = sorted(k for k in got if not k.startswith("encoder."))
        assert head == ["head.proj.bias", "head.proj.weight"]
        meta = json.loads((out / "meta.json").read_text())
        assert meta["trainable_parameters"] == 32 * 2 + 2
        assert meta["init_from"]["task"] == "masked-lm+nsp"
    # features computed once = the frozen encoder run at every step (no dropout in either)
    a, b = (load_file(o / "model.safetensors") for o in (cached.out_dir, direct.out_dir))
    assert torch.allclose(a["head.proj.weight"], b["head.proj.weight"], atol=1e-4)
    assert cached.metrics["dev_accuracy"] == pytest.approx(direct.metrics["dev_accuracy"], abs=0.02)
    assert cached.metrics["dev_accuracy"] > 0.75  # random features of distinct words separate


def test_class_weights_truncation_and_epochs_are_applied(tmp_path, data):
    rows = synthetic_rows(90, 5, classes=("pos", "pos", "neg"))  # 2:1 imbalance
    write_csv(tmp_path / "imb.csv", rows)
    cfg = RunConfig.load(None, tiny_classify_overrides(
        tmp_path / "w", tmp_path / "imb.csv", classify__dev_fraction=0.2, classify__epochs=2,
        classify__class_weights='"balanced"', classify__truncation='"tail"', classify__max_len=6,
        train__max_steps=999))
    r = train_task(cfg)
    meta = json.loads((tmp_path / "w" / "meta.json").read_text())
    n_train = meta["data"]["train"]["rows"]
    counts = meta["data"]["train"]["class_counts"]
    assert n_train == 72 and r.result.step == 9  # ceil(2 * 72 / 16)
    balanced = [n_train / (2 * counts["neg"]), n_train / (2 * counts["pos"])]
    assert meta["class_weights"] == pytest.approx(balanced)
    assert meta["classifier"]["truncation"] == "tail" and meta["data"]["train"]["truncated"] > 0
    assert meta["data"]["dev_source"].startswith("0.2 of")


def test_config_and_data_errors(tmp_path, data, mlm_dir):
    def cfg(**kw):
        return RunConfig.load(None, tiny_classify_overrides(tmp_path / "e", data / "train.csv",
                                                            data / "dev.csv", **kw))
    with pytest.raises(ConfigError, match="classify.train is empty"):
        train_task(cfg(classify__train='""'))
    with pytest.raises(ConfigError, match="max_len .* longer than the model's context"):
        train_task(cfg(classify__max_len=100))
    with pytest.raises(ConfigError, match="classification trains model.arch = encoder"):
        train_task(cfg(model__arch='"decoder"'))
    bad_dev = write_csv(tmp_path / "bad.csv", [("a good film", "pos"), ("so so", "meh")])
    with pytest.raises(DataError, match=r"bad\.csv: row 3, column 'label': label 'meh'"):
        train_task(cfg(classify__dev=f'"{bad_dev}"'))
    with pytest.raises(DataError, match="'neutral' has no training examples"):
        train_task(cfg(classify__labels='["pos", "neg", "neutral"]'))
    with pytest.raises(ConfigError, match="class_weights"):
        cfg(classify__class_weights='"heavy"')
    with pytest.raises(ConfigError, match="unknown config key 'classify.lr'"):
        cfg(classify__lr=1)
