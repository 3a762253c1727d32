"""SequenceClassifier: heads and pooling, the model directory round trip, head-only training
(backbone bit-identical, head trained) and the class-weighted loss."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models

from lmforge.errors import ConfigError
from lmforge.modeldir import load_model_dir, save_model_dir
from lmforge.models import MaskedLM, ModelConfig, SequenceClassifier, build_model, model_kind, pool
from lmforge.objectives import class_weights, classification_loss
from lmforge.training import Trainer, TrainConfig

V = 50


def cfg(**kw) -> ModelConfig:
    base = dict(arch="encoder", vocab_size=V, d_model=32, n_layer=2, n_head=4, context_length=16,
                type_vocab_size=2, embed_norm=True, prenorm=False, heads="classifier", n_classes=3)
    base.update(kw)
    return ModelConfig(**base)


def batch(B=6, T=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 6:] = False
    mask[3, 3:] = False
    labels = torch.arange(B) % 3
    return {"input_ids": ids, "token_type_ids": torch.zeros_like(ids), "padding_mask": mask,
            "labels": labels}


def test_config_selects_the_classifier_and_validates():
    assert model_kind(cfg()) == "classifier" and isinstance(build_model(cfg()), SequenceClassifier)
    assert model_kind(cfg(heads="none", n_classes=None)) == "encoder"
    with pytest.raises(ConfigError, match="n_classes >= 2"):
        cfg(n_classes=1)
    with pytest.raises(ConfigError, match="n_classes >= 2"):
        ModelConfig(arch="decoder", vocab_size=V, heads="classifier", n_classes=2)
    with pytest.raises(ConfigError, match="only classifiers"):
        cfg(heads="none")
    with pytest.raises(ConfigError, match="classifier_dropout"):
        cfg(classifier_dropout=1.5)


@pytest.mark.parametrize("pooling", ["cls", "mean", "max"])
def test_features_are_the_pooled_encoder_states(pooling):
    torch.manual_seed(0)
    m = build_model(cfg(classifier_pooling=pooling)).eval()
    b = batch()
    with torch.no_grad():
        h = m.encoder(b["input_ids"], b["token_type_ids"], b["padding_mask"])
        want = m.encoder.pooler(h) if pooling == "cls" else pool(h, b["padding_mask"], pooling)
        got = m.features(b["input_ids"], b["token_type_ids"], b["padding_mask"])
        logits = m(b["input_ids"], b["token_type_ids"], b["padding_mask"])
    assert torch.equal(got, want) and logits.shape == (6, 3)
    assert torch.allclose(logits, m.head.proj(want))
    no_pooler = build_model(cfg(pooler=False)).eval()  # cls without a pooler: the raw [CLS] state
    with torch.no_grad():
        h = no_pooler.encoder(b["input_ids"], None, b["padding_mask"])
        assert torch.equal(no_pooler.features(b["input_ids"], None, b["padding_mask"]), h[:, 0])


def test_model_directory_round_trip(tmp_path):
    torch.manual_seed(0)
    m = build_model(cfg(classifier_pooling="mean")).eval()
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(V)}, unk_token="w0"))
    save_model_dir(tmp_path, m, tok, {"classifier": {"labels": ["a", "b", "c"]}})
    lm = load_model_dir(tmp_path)
    assert isinstance(lm.model, SequenceClassifier) and lm.config.n_classes == 3
    assert lm.config.classifier_pooling == "mean"
    assert lm.meta["classifier"]["labels"] == ["a", "b", "c"]
    b = batch()
    args = (b["input_ids"], b["token_type_ids"], b["padding_mask"])
    with torch.no_grad():
        assert torch.equal(lm.model(*args), m(*args))


def test_pretrained_encoder_weights_load_by_the_same_names():
    torch.manual_seed(0)
    mlm = MaskedLM(cfg(heads="mlm+nsp", n_classes=None))
    clf = build_model(cfg())
    enc = {k: v for k, v in mlm.state_dict().items() if k.startswith("encoder.")}
    missing, unexpected = clf.load_state_dict(enc, strict=False)
    assert not unexpected and sorted(missing) == ["head.proj.bias", "head.proj.weight"]


def test_head_only_training_leaves_the_backbone_bit_identical(tmp_path):
    torch.manual_seed(0)
    m = build_model(cfg(dropout=0.1))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    m.freeze_encoder()
    assert m.num_params(trainable_only=True) == 32 * 3 + 3
    tc = TrainConfig(max_steps=15, batch_size=6, lr=1e-2, warmup_steps=0, eval_every=100,
                     checkpoint_every=0, progress=False, dtype="float32", weight_decay=0.1)
    Trainer(m, classification_loss, lambda s, mi, r: batch(seed=s), tc, tmp_path).fit()
    after = m.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed == ["head.proj.bias", "head.proj.weight"]
    m.train()
    assert m.training and m.head.training and not m.encoder.training  # no dropout in the encoder
    assert all(not mod.training for mod in m.encoder.modules())


def test_class_weights_weight_each_example_by_its_class():
    torch.manual_seed(0)
    m = build_model(cfg()).eval()
    b = batch()
    w = torch.tensor([1.0, 3.0, 0.5])
    with torch.no_grad():
        logits = m(b["input_ids"], b["token_type_ids"], b["padding_mask"])
        nll = -F.log_softmax(logits, -1).gather(1, b["labels"][:, None]).squeeze(1)  # (B,)
        ww = w[b["labels"]]
        manual = (ww * nll).sum() / ww.sum()
        weighted = classification_loss(m, b, class_weights=w)
        plain = classification_loss(m, b)
    assert torch.allclose(weighted, manual, atol=1e-6)
    assert torch.allclose(plain, nll.mean(), atol=1e-6)
    assert not torch.allclose(weighted, plain)
    # equal weights change nothing
    assert torch.allclose(classification_loss(m, b, class_weights=torch.full((3,), 2.0)), plain)


def test_class_weight_specs():
    from sklearn.utils.class_weight import compute_class_weight

    y = np.array([0] * 90 + [1] * 8 + [2] * 2)
    counts = np.bincount(y)
    got = class_weights("balanced", counts, ["a", "b", "c"])
    want = compute_class_weight("balanced", classes=np.arange(3), y=y)
    assert np.allclose(got.numpy(), want)
    assert class_weights("none", counts, ["a", "b", "c"]) is None
    assert class_weights([1, 2, 3], counts, ["a", "b", "c"]).tolist() == [1, 2, 3]
    assert class_weights({"c": 4.0}, counts, ["a", "b", "c"]).tolist() == [1, 1, 4]
    with pytest.raises(ConfigError, match="2 numbers for 3 classes"):
        class_weights([1, 2], counts, ["a", "b", "c"])
    with pytest.raises(ConfigError, match="'z', which is not one of"):
        class_weights({"z": 2.0}, counts, ["a", "b", "c"])
    with pytest.raises(ConfigError, match="positive"):
        class_weights([1, 0, 1], counts, ["a", "b", "c"])
