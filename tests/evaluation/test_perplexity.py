import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from lmforge.errors import DataError
from lmforge.evaluation import perplexity, windows
from lmforge.models import ModelConfig, build_model


def model(ctx=16):
    torch.manual_seed(0)
    return build_model(ModelConfig(vocab_size=30, d_model=32, n_layer=2, n_head=2,
                                   context_length=ctx)).eval()


def test_windows_score_every_target_once():
    for n, ctx, stride in [(10, 4, 2), (10, 4, 4), (3, 4, 2), (101, 16, 5), (50, 8, 8)]:
        targets = []
        for s, e, k in windows(n, ctx, stride):
            assert e - s <= ctx and k <= e - s
            targets += list(range(s + 1, e + 1))[-k:]
        assert targets == list(range(1, n))


def test_short_text_equals_plain_cross_entropy():
    m = model()
    ids = torch.randint(0, 30, (12,))
    with torch.no_grad():
        ref = F.cross_entropy(m(ids[None, :-1])[0], ids[1:]).item()
    res = perplexity(m, ids.tolist(), n_chars=24, n_bytes=30)
    assert math.isclose(res.loss, ref, rel_tol=1e-5)
    assert math.isclose(res.perplexity, math.exp(ref), rel_tol=1e-5)
    assert math.isclose(res.bits_per_char, ref * 11 / math.log(2) / 24, rel_tol=1e-5)
    assert math.isclose(res.bits_per_byte, ref * 11 / math.log(2) / 30, rel_tol=1e-5)


def test_sliding_window_equals_naive_per_token_scoring():
    """stride 1: each token is scored with the full (context - 1)-token history."""
    m = model(ctx=8)
    ids = torch.randint(0, 30, (40,))
    nll = 0.0
    with torch.no_grad():
        for t in range(1, 40):
            hist = ids[max(0, t - 8):t]
            nll -= torch.log_softmax(m(hist[None])[0, -1], -1)[ids[t]].item()
    res = perplexity(m, ids.tolist(), n_chars=40, n_bytes=40, stride=1, batch_size=7)
    assert math.isclose(res.loss, nll / 39, rel_tol=1e-5)
    assert res.n_tokens == 39


def test_bos_scores_the_first_token_too():
    m = model()
    res = perplexity(m, [3, 4, 5, 6], n_chars=4, n_bytes=4, bos_id=0)
    assert res.n_tokens == 4


def test_window_shorter_than_the_context():
    """context=W scores as a model whose context is W would (the same windows)."""
    ids = torch.randint(0, 30, (40,), generator=torch.Generator().manual_seed(4)).tolist()
    m = model(ctx=16)
    m8 = copy.deepcopy(m)
    m8.cfg = dataclasses.replace(m.cfg, context_length=8)
    short = perplexity(m8, ids, n_chars=40, n_bytes=40)
    windowed = perplexity(m, ids, n_chars=40, n_bytes=40, context=8)
    assert (windowed.context, windowed.stride) == (8, 4)
    assert math.isclose(windowed.loss, short.loss, rel_tol=1e-5)
    with pytest.raises(DataError, match="window must be in 1..16"):
        perplexity(model(ctx=16), ids, n_chars=40, n_bytes=40, context=32)
