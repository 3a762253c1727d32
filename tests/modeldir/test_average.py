"""Weight averaging of model directories (checkpoint averaging, model soups): the mean of the
weights, weighted means, a loadable result, and clear refusals of models that do not match."""

import json

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer, models, pre_tokenizers

from lmforge.cli.main import main
from lmforge.errors import CheckpointError
from lmforge.modeldir import load_model_dir, save_model_dir
from lmforge.models import ModelConfig, build_model
from lmforge.modeldir import average_model_dirs


def tokenizer(extra: str = "") -> Tokenizer:
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "a", "b", "c", "d" + extra])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def model_dir(path, seed: int, meta=None, tok=None, **cfg_kw):
    cfg = ModelConfig(arch="encoder", vocab_size=6, d_model=16, n_layer=1, n_head=2,
                      context_length=8, heads="classifier", n_classes=2, **cfg_kw)
    torch.manual_seed(seed)
    return save_model_dir(path, build_model(cfg), tok or tokenizer(),
                          meta or {"classifier": {"labels": ["neg", "pos"]}})


def test_mean_and_weighted_mean_of_the_weights(tmp_path):
    dirs = [model_dir(tmp_path / f"m{i}", seed=i) for i in range(3)]
    sds = [load_file(str(d / "model.safetensors")) for d in dirs]
    out = average_model_dirs(dirs, tmp_path / "soup")
    soup = load_file(str(out / "model.safetensors"))
    assert soup.keys() == sds[0].keys()
    for k in soup:
        assert torch.allclose(soup[k], (sds[0][k] + sds[1][k] + sds[2][k]) / 3, atol=1e-6), k
    assert not torch.equal(soup["head.proj.weight"], sds[0]["head.proj.weight"])
    out = average_model_dirs(dirs[:2], tmp_path / "w", weights=[3, 1])
    w = load_file(str(out / "model.safetensors"))
    for k in w:
        assert torch.allclose(w[k], 0.75 * sds[0][k] + 0.25 * sds[1][k], atol=1e-6), k
    lm = load_model_dir(tmp_path / "soup")  # an ordinary model directory
    meta = json.loads((tmp_path / "soup" / "meta.json").read_text())
    assert meta["classifier"]["labels"] == ["neg", "pos"]
    assert meta["source"]["kind"] == "averaged"
    assert [a["weight"] for a in meta["source"]["inputs"]] == pytest.approx([1 / 3] * 3)
    assert lm.meta.source.inputs[0].path == str(dirs[0])
    ids = torch.tensor([[2, 3, 4]])
    want = build_model(lm.config)
    want.load_state_dict({k: v for k, v in soup.items()}, strict=False)
    assert torch.allclose(lm.model.eval()(ids), want.eval()(ids), atol=1e-6)  # logits of the mean


def test_models_that_do_not_match_are_refused(tmp_path):
    a = model_dir(tmp_path / "a", seed=0)
    cases = {
        "field classifier_pooling": model_dir(tmp_path / "b", seed=1, classifier_pooling="mean"),
        "tokenizer.json differs": model_dir(tmp_path / "c", seed=1, tok=tokenizer("x")),
        "classifier.labels": model_dir(tmp_path / "d", seed=1,
                                       meta={"classifier": {"labels": ["bad", "good"]}}),
    }
    for message, other in cases.items():
        with pytest.raises(CheckpointError, match=message):
            average_model_dirs([a, other], tmp_path / "out")
    with pytest.raises(CheckpointError, match="at least 2"):
        average_model_dirs([a], tmp_path / "out")
    with pytest.raises(CheckpointError, match="one non-negative weight"):
        average_model_dirs([a, a], tmp_path / "out", weights=[1.0])


def test_cli(tmp_path, capsys):
    a, b = model_dir(tmp_path / "a", seed=0), model_dir(tmp_path / "b", seed=1)
    assert main(["average", str(a), str(b), "--out", str(tmp_path / "soup")]) == 0
    assert "averaged 2 models" in capsys.readouterr().out
    bad = model_dir(tmp_path / "bad", seed=1, classifier_pooling="mean")
    assert main(["average", str(a), str(bad), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "bad/config.json" in err and "classifier_pooling" in err and "Traceback" not in err
