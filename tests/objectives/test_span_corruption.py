"""T5 span corruption: (input, target) gives back the original sequence, the noise share and
mean span length match what was asked for, sentinels come in order, and too few sentinels is
a clear error."""

import numpy as np
import pytest

from lmforge.errors import ConfigError, DataError
from lmforge.objectives import corrupt, sentinel_tokens, span_mask
from lmforge.objectives.span_corruption import num_noise_spans

V = 1000
SENTINELS = list(range(V, V + 100))  # ids above the ordinary vocabulary


def uncorrupt(inputs: list[int], target: list[int], sentinels: list[int]) -> list[int]:
    """Inverse of corrupt: put each target span back where its sentinel sits in the input."""
    is_sentinel = set(sentinels)
    spans: dict[int, list[int]] = {}
    current = None
    for tok in target:
        if tok in is_sentinel:
            current = tok
            spans[current] = []
        else:
            spans[current].append(tok)
    out: list[int] = []
    for tok in inputs:
        out.extend(spans[tok] if tok in is_sentinel else [tok])
    return out


def draws(n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        ids = rng.integers(0, V, size=int(rng.integers(2, 400))).tolist()
        yield ids, *corrupt(ids, SENTINELS, rng)


def test_sentinel_tokens():
    assert sentinel_tokens(3) == ["<extra_id_0>", "<extra_id_1>", "<extra_id_2>"]
    assert sentinel_tokens(0) == []


def test_reconstruction_gives_back_the_ids():
    for ids, inputs, target in draws():
        assert uncorrupt(inputs, target, SENTINELS) == ids
        assert len(inputs) <= len(ids) and inputs != ids  # at least one span was replaced


def test_sentinels_in_order_and_target_closed():
    for ids, inputs, target in draws(100, seed=1):
        in_sent = [t for t in inputs if t in SENTINELS]
        tgt_sent = [t for t in target if t in SENTINELS]
        assert in_sent == SENTINELS[:len(in_sent)]
        assert tgt_sent == SENTINELS[:len(in_sent) + 1]  # one more: the closing sentinel
        assert target[0] == SENTINELS[0] and target[-1] == SENTINELS[len(in_sent)]


def test_noise_share_and_mean_span_length():
    rng = np.random.default_rng(2)
    noise_total = token_total = spans = 0
    for _ in range(400):
        length = int(rng.integers(64, 512))
        mask = span_mask(length, 0.15, 3.0, rng)
        assert mask.dtype == bool and mask.shape == (length,)
        assert not mask[0] and mask[-1]  # starts with kept tokens, ends with a span
        noise_total += int(mask.sum())
        token_total += length
        spans += int((mask[1:] & ~mask[:-1]).sum())  # starts of spans (never at position 0)
    assert abs(noise_total / token_total - 0.15) < 0.01
    assert abs(noise_total / spans - 3.0) < 0.3


def test_other_settings_and_tiny_sequences():
    rng = np.random.default_rng(3)
    mask = span_mask(1000, 0.5, 8.0, rng)
    assert mask.sum() == 500 and (mask[1:] & ~mask[:-1]).sum() == round(500 / 8)
    assert span_mask(2, 0.15, 3.0, rng).tolist() == [False, True]
    # at high density there are not enough kept tokens to separate every span: spans shrink
    assert num_noise_spans(10, 0.9, 1.0) == (9, 1)
    inputs, target = corrupt([5, 6, 7], SENTINELS, rng)
    assert uncorrupt(inputs, target, SENTINELS) == [5, 6, 7]


def test_too_few_sentinels_is_an_error():
    ids = list(range(200))  # 30 noise tokens -> 10 spans -> 11 sentinels
    with pytest.raises(ConfigError, match="needs 11 sentinel ids"):
        corrupt(ids, SENTINELS[:10], np.random.default_rng(0))
    corrupt(ids, SENTINELS[:11], np.random.default_rng(0))  # exactly enough is fine


def test_bad_settings():
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match="noise_density"):
        span_mask(100, 1.5, 3.0, rng)
    with pytest.raises(ConfigError, match="mean_span_length"):
        span_mask(100, 0.15, 0.0, rng)
    with pytest.raises(DataError, match="at least 2 tokens"):
        corrupt([1], SENTINELS, rng)
