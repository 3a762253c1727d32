"""The SFT objective (lmforge.objectives.sft): cross-entropy over the assistant tokens only,
for any model called as ``model(ids, padding_mask=...) -> logits``."""

import copy
import math

import pytest
import torch
from torch import nn

import lmforge.objectives.sft as sft_mod
from lmforge.models import ModelConfig, build_model
from lmforge.objectives import sft_loss
from lmforge.objectives.sft import has_separate_head, trained_tokens
from lmforge.tokenizers.special import IGNORE_INDEX

V = 50


def decoder(seed: int = 0):
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=V, d_model=32, n_layer=2, n_head=4, context_length=32,
                      positional="rope", activation="swiglu", norm="rmsnorm", bias=False,
                      tie_embeddings=False)
    return build_model(cfg).train()


class BagOfEmbeddings(nn.Module):
    """Not an lmforge model: logits from the running mean of the embeddings (causal)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.emb = nn.Embedding(V, 16)
        self.out = nn.Linear(16, V)

    def forward(self, ids, padding_mask=None):
        x = self.emb(ids).cumsum(1) / torch.arange(1, ids.shape[1] + 1)[:, None]  # (B, T, C)
        return self.out(x)  # (B, T, V)


class Wrapper(nn.Module):
    """Holds a model as one child (as DDP and torch.compile do): the all-logits path."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, ids, **kw):
        return self.m(ids, **kw)


def batch():
    """3 rows of 12 tokens; labels: the ids on 'assistant' spans, IGNORE_INDEX elsewhere and
    on the padding (row 2 ends with 4 pads)."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, V, (3, 12), generator=g)
    trained = torch.zeros(3, 12, dtype=torch.bool)
    trained[0, 4:8] = trained[1, 2:3] = trained[1, 9:12] = trained[2, 5:8] = True
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[2, 8:] = False
    labels = torch.where(trained, ids, IGNORE_INDEX)
    return ids, labels, mask


def hand_computed(logits, labels):
    """Mean over trained positions t >= 1 of -log softmax(logits[b, t - 1])[labels[b, t]]."""
    terms = []
    for b in range(labels.shape[0]):
        for t in range(1, labels.shape[1]):
            y = int(labels[b, t])
            if y != IGNORE_INDEX:
                row = logits[b, t - 1].double()
                terms.append(float(torch.logsumexp(row, 0) - row[y]))
    return sum(terms) / len(terms), len(terms)


@pytest.mark.parametrize("make", [decoder, BagOfEmbeddings], ids=["CausalLM", "other-model"])
def test_loss_is_the_cross_entropy_of_assistant_tokens_only(make):
    model = make()
    ids, labels, mask = batch()
    with torch.no_grad():
        want, n = hand_computed(model(ids, padding_mask=mask), labels)
        got = sft_loss(model, (ids, labels, mask))
        as_dict = sft_loss(model, {"input_ids": ids, "labels": labels, "padding_mask": mask})
    assert n == trained_tokens(labels) == 4 + 1 + 3 + 3
    assert float(got) == pytest.approx(want, rel=1e-5)
    assert float(as_dict) == float(got)
    # changing a label outside the assistant spans changes nothing; inside, it does
    other = labels.clone()
    other[0, 0] = 7  # position 0 predicts nothing: never trained
    with torch.no_grad():
        assert float(sft_loss(model, (ids, other, mask))) == pytest.approx(want, rel=1e-5)
        other[1, 10] = (other[1, 10] + 1) % V
        assert float(sft_loss(model, (ids, other, mask))) != pytest.approx(want, rel=1e-5)


def test_separate_head_path_equals_all_logits_in_loss_and_gradients(monkeypatch):
    """The head on trained positions only, chunks recomputed in backward, gives the loss and
    gradients of computing every logit (the path a wrapped model takes)."""
    model = decoder()
    plain = copy.deepcopy(model)
    assert has_separate_head(model) and not has_separate_head(Wrapper(plain))
    assert not has_separate_head(BagOfEmbeddings())
    monkeypatch.setattr(sft_mod, "LOGITS_PER_CHUNK", V * 3)  # 3 rows per chunk
    b = batch()
    got, want = sft_loss(model, b), sft_loss(Wrapper(plain), b)
    torch.testing.assert_close(got, want)
    got.backward()
    want.backward()
    for (name, p), q in zip(model.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-4, msg=name)
    with torch.no_grad():  # the no-grad branch (no checkpointing) too
        torch.testing.assert_close(sft_loss(model, b), want.detach())


@pytest.mark.parametrize("make", [decoder, BagOfEmbeddings], ids=["CausalLM", "other-model"])
def test_a_batch_without_trained_tokens_is_a_zero_with_a_graph(make):
    model = make()
    ids, _, mask = batch()
    labels = torch.full_like(ids, IGNORE_INDEX)
    loss = sft_loss(model, (ids, labels))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()  # no error: the trainer may step on such a batch
    assert not math.isnan(loss.item())
