"""`classify.mode = "lora"` / `"qlora"` on a tiny encoder: it learns a separable task training
only the adapters and the head; the model directory holds the merged weights (the same logits
as the adapted model in memory) and OUT_DIR/adapter the adapters with the head; checkpoints
hold only those tensors and resume exactly; config errors name the [classify] fields."""

import json
from pathlib import Path

import pytest
import torch
from encoder_helpers import (synthetic_rows, tiny_classify_overrides, write_csv,
                             write_tiny_mlm_dir)
from safetensors.torch import load_file

from lmforge.errors import ConfigError
from lmforge.finetune import load_adapter, lora_layers
from lmforge.inference import Classifier
from lmforge.modeldir import load_model_dir
from lmforge.models import SequenceClassifier
from lmforge.tasks import train_task
from lmforge.tasks.classify import init_classifier
from lmforge.tasks import RunConfig
from lmforge.training.checkpoint import list_checkpoints, load_checkpoint

LORA = dict(classify__mode='"lora"', classify__lora__rank=4, classify__pooling='"mean"',
            train__lr=3e-2)
HEAD = ["head.proj.bias", "head.proj.weight"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("syn")
    write_csv(d / "train.csv", synthetic_rows(200, 0))
    write_csv(d / "dev.csv", synthetic_rows(60, 1))
    return d


def cfg(out, data, **kw):
    return RunConfig.load(None, tiny_classify_overrides(out, data / "train.csv", data / "dev.csv",
                                                        **{**LORA, **kw}))


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, data):
    return train_task(cfg(tmp_path_factory.mktemp("lora") / "model", data))


def ids(tokenizer, texts):
    enc = [tokenizer.encode(t).ids for t in texts]
    n = max(map(len, enc))
    x = torch.tensor([e + [0] * (n - len(e)) for e in enc])
    return x, x != 0


def test_lora_learns_with_adapters_and_head_only(lora_run):
    m = lora_run.metrics
    assert m["dev_accuracy"] >= 0.9  # measured 0.967 (random frozen encoder, rank 4, 60 steps)
    n_adapter = 2 * 4 * (32 + 32)  # q and v of one block, rank 4
    assert m["trainable_params"] == n_adapter + 32 * 2 + 2
    assert m["trainable_share"] < 0.05
    meta = json.loads((lora_run.out_dir / "meta.json").read_text())
    assert meta["classifier"]["mode"] == "lora" and meta["lora"]["layers"] == 2
    assert meta["lora"]["adapter_params"] == n_adapter
    assert meta["trainable_parameters"] == m["trainable_params"]
    assert meta["trainable_share"] == pytest.approx(m["trainable_share"])
    assert meta["parameters"] == load_model_dir(lora_run.out_dir).model.num_params()
    model = lora_run.model  # the adapted model: only adapters and head train
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == sorted(HEAD + [f"encoder.backbone.layers.0.attn.{p}_proj.lora_{ab}"
                                       for p in "qv" for ab in "AB"])


def test_only_adapters_and_head_receive_gradients(lora_run):
    model = lora_run.model.train()
    model.zero_grad(set_to_none=True)
    x, mask = ids(lora_run.tokenizer, ["the film was great", "a dull plot"])
    model(x, padding_mask=mask).sum().backward()
    got = sorted(n for n, p in model.named_parameters() if p.grad is not None)
    assert got == sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert all(".lora_" in n or n.startswith("head.") for n in got)
    model.zero_grad(set_to_none=True)
    model.eval()


def test_the_merged_model_directory_gives_the_adapted_models_logits(lora_run):
    out = lora_run.out_dir
    merged = load_model_dir(out).model
    assert isinstance(merged, SequenceClassifier) and not lora_layers(merged)
    texts = ["the film was really great", "a dull and awful plot", "the actors were fine"]
    x, mask = ids(lora_run.tokenizer, texts)
    model = lora_run.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(x, padding_mask=mask), model(x, padding_mask=mask),
                                   atol=1e-5, rtol=1e-5)
    assert Classifier.load(out).predict(texts[:2]) == ["pos", "neg"]  # `lmforge classify` path
    # the adapter directory: A, B and the head, small next to the model
    tensors = load_file(out / "adapter" / "adapter_model.safetensors")
    assert sorted(k for k in tensors if not k.startswith("head.")) == sorted(
        f"encoder.backbone.layers.0.attn.{p}_proj.lora_{ab}" for p in "qv" for ab in "AB")
    assert sorted(k for k in tensors if k.startswith("head.")) == HEAD
    acfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert acfg["modules_to_save"] == ["head"] and acfg["classify"]["labels"] == ["neg", "pos"]
    assert (out / "adapter" / "adapter_model.safetensors").stat().st_size < \
        (out / "model.safetensors").stat().st_size / 5


def test_checkpoints_hold_adapters_and_head_and_resume_exactly(tmp_path, data, lora_run):
    tok = lora_run.out_dir / "tokenizer.json"  # the same tokenizer for both runs
    kw = dict(tokenizer__path=f'"{tok}"', model__dropout=0.1, classify__lora__dropout=0.1)
    full = train_task(cfg(tmp_path / "full", data, **kw))
    c = cfg(tmp_path / "cut", data, **kw)
    train_task(c, stop_at=30)  # "killed" after step 30 (checkpoint at 20)
    state = load_checkpoint(list_checkpoints(tmp_path / "cut" / "checkpoints")[-1])
    assert state["model_scope"] == "trainable"
    assert all(".lora_" in k or k.startswith("head.") for k in state["model"])
    torch.manual_seed(999)
    resumed = train_task(c, resume=True)
    assert resumed.result.step == full.result.step == 60
    for f in ("model.safetensors", "adapter/adapter_model.safetensors"):
        a, b = (load_file(tmp_path / d / f) for d in ("full", "cut"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f
    assert resumed.metrics == full.metrics
    # adapters + head + their optimiser state: a fraction of the model's weights alone
    small = list_checkpoints(tmp_path / "cut" / "checkpoints")[-1].stat().st_size
    weights = (tmp_path / "cut" / "model.safetensors").stat().st_size
    # measured: 29 KB (8 KB of it RNG state) vs 76 KB of weights; a full-mode checkpoint
    # holds the weights and Adam's two moments: about 3x the weights
    assert small < weights / 2


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory, data) -> Path:
    return write_tiny_mlm_dir(tmp_path_factory.mktemp("mlm") / "mlm", data / "train.csv")


def test_qlora_from_a_pretrained_encoder_and_the_adapter_on_its_base(tmp_path, data, mlm_dir):
    r = train_task(cfg(tmp_path / "q", data, classify__mode='"qlora"', train__lr=1e-2,
                       classify__init_from=f'"{mlm_dir}"',
                       classify__lora__targets='["*.attn.*_proj", "*.ff.*_proj"]'))
    meta = json.loads((tmp_path / "q" / "meta.json").read_text())
    assert meta["lora"]["nf4_bytes_per_param"] < 0.6 and meta["lora"]["layers"] == 6
    assert r.metrics["dev_accuracy"] >= 0.85  # measured 0.95
    x, mask = ids(r.tokenizer, ["the film was really great", "a dull and awful plot"])
    merged = load_model_dir(tmp_path / "q").model  # dequantised base + update
    with torch.no_grad():
        want = r.model.eval()(x, padding_mask=mask)
        torch.testing.assert_close(merged(x, padding_mask=mask), want, atol=1e-4, rtol=1e-4)
    # the adapter (with the head) loads onto the original encoder: close to the QLoRA model
    base, _, _ = init_classifier(mlm_dir, 2, "mean")
    load_adapter(base, tmp_path / "q" / "adapter")
    with torch.no_grad():
        got = base.eval()(x, padding_mask=mask)
    assert (got.argmax(-1) == want.argmax(-1)).all()
    assert (got - want).abs().max() < 0.1 * want.abs().max()  # NF4 error only


def test_lora_config_errors_name_the_classify_fields(tmp_path, data):
    with pytest.raises(ConfigError, match=r"classify.lora.targets: pattern\(s\) '\*.attn.nope'"):
        train_task(cfg(tmp_path / "e", data, classify__lora__targets='["*.attn.nope"]'))
    with pytest.raises(ConfigError, match=r"classify.lora.rank = 64 is larger"):
        train_task(cfg(tmp_path / "e", data, classify__lora__rank=64, classify__lora__targets=
                       '["*.attn.q_proj"]'))
    with pytest.raises(ConfigError, match=r"^classify\.lora\.rank: must be a positive integer"):
        cfg(tmp_path / "e", data, classify__lora__rank=0)
    # the old flat key still loads; given next to its new name, it is refused
    with pytest.raises(ConfigError, match=r"classify\.lora_rank is the old name of "
                                          r"classify\.lora\.rank and both are given"):
        cfg(tmp_path / "e", data, classify__lora_rank=2)
    with pytest.raises(ConfigError, match=r"^classify\.lora\.dropout: must be in \[0, 1\)"):
        cfg(tmp_path / "e", data, classify__lora__dropout=1.5)
    with pytest.raises(ConfigError, match="classify.mode"):
        cfg(tmp_path / "e", data, classify__mode='"adapter"')
