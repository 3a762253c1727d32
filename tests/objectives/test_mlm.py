"""Masked-LM objective: masking statistics (~15% of maskable tokens; 80% [MASK], 10% random,
10% kept; special tokens and padding never masked), the loss, and a tiny MLM + NSP run on a
few KB of text that learns."""

import json
import math
import random

import pytest
import torch

from lmforge.errors import ConfigError, DataError, TokenizerError
from lmforge.modeldir import load_model_dir
from lmforge.models import MaskedLM, ModelConfig, build_model
from lmforge.objectives import mask_tokens, mlm_nsp_loss, special_tokens_mask
from lmforge.tasks import train_task
from lmforge.tasks import RunConfig

MASK, V = 4, 1000


@pytest.fixture(scope="module")
def masked():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, V, (64, 512), generator=g)
    special = torch.rand(64, 512, generator=g) < 0.1
    special[:, 0] = special[:, -1] = True
    inputs, labels = mask_tokens(ids, special, V, MASK, 0.15, torch.Generator().manual_seed(1))
    return ids, special, inputs, labels


def test_about_15_percent_of_maskable_tokens_are_picked(masked):
    ids, special, inputs, labels = masked
    picked = labels != -100
    rate = picked.sum().item() / (~special).sum().item()
    assert abs(rate - 0.15) < 0.01, rate


def test_80_10_10_split(masked):
    ids, special, inputs, labels = masked
    picked = labels != -100
    n = picked.sum().item()
    as_mask = (inputs[picked] == MASK).sum().item() / n
    kept = (inputs[picked] == ids[picked]).sum().item() / n
    rand = ((inputs[picked] != MASK) & (inputs[picked] != ids[picked])).sum().item() / n
    assert abs(as_mask - 0.8) < 0.03 and abs(kept - 0.1) < 0.02 and abs(rand - 0.1) < 0.02, \
        (as_mask, kept, rand)


def test_labels_and_untouched_positions(masked):
    ids, special, inputs, labels = masked
    picked = labels != -100
    assert not (picked & special).any()  # special tokens and padding are never picked
    assert torch.equal(labels[picked], ids[picked])
    assert torch.equal(inputs[~picked], ids[~picked])
    assert inputs.min() >= 0 and inputs.max() < V


def test_masking_is_deterministic_given_the_generator(masked):
    ids, special, inputs, labels = masked
    again = mask_tokens(ids, special, V, MASK, 0.15, torch.Generator().manual_seed(1))
    assert torch.equal(again[0], inputs) and torch.equal(again[1], labels)


def test_special_tokens_mask_covers_padding():
    ids = torch.tensor([[1, 7, 8, 2, 0, 0]])
    pad = torch.tensor([[1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    assert special_tokens_mask(ids, [1, 2], pad).tolist() == [[True, False, False, True, True, True]]


def test_bad_arguments():
    ids = torch.randint(5, V, (2, 8))
    ok = torch.zeros(2, 8, dtype=torch.bool)
    with pytest.raises(ConfigError, match="probability"):
        mask_tokens(ids, ok, V, MASK, prob=1.5)
    with pytest.raises(TokenizerError, match="mask id"):
        mask_tokens(ids, ok, V, V + 3)
    with pytest.raises(DataError, match="special_mask"):
        mask_tokens(ids, ok[:, :4], V, MASK)


def test_loss_is_finite_even_when_nothing_is_masked():
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="encoder", vocab_size=30, d_model=16, n_layer=1,
                                    n_head=2, context_length=16, type_vocab_size=2))
    ids = torch.randint(5, 30, (2, 10))
    batch = {"input_ids": ids, "token_type_ids": torch.zeros_like(ids),
             "padding_mask": torch.ones_like(ids, dtype=torch.bool),
             "mlm_labels": torch.full_like(ids, -100), "nsp_labels": torch.tensor([0, 1])}
    loss = mlm_nsp_loss(model, batch)
    assert torch.isfinite(loss) and abs(loss.item() - math.log(2)) < 0.1  # NSP only
    batch["mlm_labels"][0, 3] = ids[0, 3]
    loss = mlm_nsp_loss(model, batch)
    loss.backward()
    assert loss.item() > math.log(30) - 0.5


def synthetic_corpus(n_docs=50, seed=0) -> str:
    """A few KB of documents (blank-line separated) of simple patterned sentences."""
    rnd = random.Random(seed)
    nouns = ["cat", "dog", "bird", "horse", "fish", "mouse", "king", "queen"]
    verbs = ["sees", "likes", "chases", "finds", "follows"]
    adjs = ["small", "big", "red", "old", "happy"]
    docs = []
    for _ in range(n_docs):
        topic = rnd.choice(nouns)
        lines = [f"the {rnd.choice(adjs)} {topic} {rnd.choice(verbs)} the {rnd.choice(nouns)} ."
                 for _ in range(rnd.randint(2, 5))]
        docs.append("\n".join(lines))
    return "\n\n".join(docs) + "\n"


def test_tiny_mlm_nsp_run_lowers_the_loss(tmp_path):
    data = tmp_path / "corpus.txt"
    data.write_text(synthetic_corpus(), encoding="utf-8")
    assert 3_000 < data.stat().st_size < 10_000
    cfg = RunConfig.load(None, [
        f'out_dir="{tmp_path / "run"}"', f'data.path="{data}"', 'tokenizer.kind="wordpiece"',
        "tokenizer.vocab_size=120", 'model.arch="encoder"', "model.d_model=32",
        "model.n_layer=2", "model.n_head=2", "model.context_length=32",
        "model.type_vocab_size=2", "model.embed_norm=true", "model.prenorm=false",
        "train.max_steps=80", "train.batch_size=16", "train.lr=3e-3", "train.warmup_steps=10",
        "train.eval_every=40", "train.eval_batches=4", "train.log_every=10",
        "train.checkpoint_every=0", "train.progress=false", 'train.dtype="float32"',
        "data.val_fraction=0.2"])
    run = train_task(cfg)  # dispatches to train_mlm for arch = "encoder"
    vocab = run.tokenizer.get_vocab_size()
    train = [r["loss"] for r in run.result.history if r["split"] == "train"]
    assert train[-1] < train[0] - 1.0, train
    m = run.metrics
    assert m["mlm_loss"] < math.log(vocab) - 1.5, (m, vocab)
    assert m["mlm_accuracy"] > 0.3 and 0.0 <= m["nsp_accuracy"] <= 1.0
    evals = [r for r in run.result.history if r["split"] == "val"]  # every eval: accuracies too
    assert [r["step"] for r in evals] == [40, 80]
    assert evals[-1]["mlm_accuracy"] == pytest.approx(m["mlm_accuracy"])
    assert evals[-1]["nsp_accuracy"] == pytest.approx(m["nsp_accuracy"])
    meta = json.loads((run.out_dir / "meta.json").read_text())
    assert meta["task"] == "masked-lm+nsp" and meta["eval"]["mlm_accuracy"] == m["mlm_accuracy"]
    lm = load_model_dir(run.out_dir)
    assert isinstance(lm.model, MaskedLM) and lm.tokenizer.token_to_id("[MASK]") is not None


def test_train_mlm_refuses_a_decoder_and_headless_encoders(tmp_path):
    from lmforge.tasks.mlm import train_mlm

    with pytest.raises(ConfigError, match="encoder"):
        train_mlm(RunConfig(out_dir=str(tmp_path)))
    cfg = RunConfig.load(None, [f'out_dir="{tmp_path}"', 'model.arch="encoder"',
                                'model.heads="none"'])
    with pytest.raises(ConfigError, match="nothing to pre-train"):
        train_mlm(cfg)
