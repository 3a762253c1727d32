import math

import torch

from lmforge.blocks import (LearnedPositions, RotaryEmbedding, SinusoidalPositions, alibi_bias,
                            alibi_slopes, sinusoidal_table)


def test_sinusoidal_hand_values():
    t = sinusoidal_table(3, 4)
    # position 1: sin(1), cos(1), sin(1/100), cos(1/100) for dim 4 (base 10000^(2/4) = 100)
    expected = [math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)]
    assert torch.allclose(t[1], torch.tensor(expected), atol=1e-6)
    assert torch.allclose(t[0], torch.tensor([0.0, 1.0, 0.0, 1.0]))
    assert SinusoidalPositions(3, 4)(torch.tensor([2])).shape == (1, 4)


def test_learned_positions_are_trainable():
    p = LearnedPositions(8, 4)
    p(torch.arange(3)).sum().backward()
    assert p.weight.grad[:3].abs().sum() > 0 and p.weight.grad[3:].abs().sum() == 0


def test_rope_rotates_pairs_by_position_angle():
    # head_dim 2 -> one pair (x0, x1) rotated by angle = position * theta^0 = position
    rope = RotaryEmbedding(2, 8)
    x = torch.tensor([[[[1.0, 0.0]]]]).expand(1, 1, 4, 2)  # (B, H, T, D)
    y = rope(x, torch.arange(4))
    for p in range(4):
        assert torch.allclose(y[0, 0, p], torch.tensor([math.cos(p), math.sin(p)]), atol=1e-6)


def test_rope_second_frequency_and_norm():
    rope = RotaryEmbedding(4, 8, theta=100.0)  # frequencies 1 and 100^(-2/4) = 0.1
    x = torch.tensor([0.0, 1.0, 0.0, 2.0]).view(1, 1, 1, 4)
    y = rope(x, torch.tensor([3]))[0, 0, 0]
    # pairs are (x0, x2) with angle 3 and (x1, x3) with angle 0.3
    a, b = 3.0, 0.3
    expected = [0 * math.cos(a) - 0 * math.sin(a), 1 * math.cos(b) - 2 * math.sin(b),
                0 * math.sin(a) + 0 * math.cos(a), 1 * math.sin(b) + 2 * math.cos(b)]
    assert torch.allclose(y, torch.tensor(expected), atol=1e-5)
    assert torch.allclose(y.norm(), x.norm())


def test_rope_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    rope = RotaryEmbedding(8, 64)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    def score(m, n):
        return float(rope(q, torch.tensor([m])).flatten() @ rope(k, torch.tensor([n])).flatten())
    assert abs(score(5, 2) - score(13, 10)) < 1e-4
    assert abs(score(5, 2) - score(5, 4)) > 1e-3


def test_alibi_slopes_match_paper():
    assert torch.allclose(alibi_slopes(8), torch.tensor([2.0 ** -(i + 1) for i in range(8)]))
    # 6 heads: slopes of 4 heads (2^-2, 2^-4, 2^-6, 2^-8) + every other of 8 heads (2^-1, 2^-3)
    expected = [2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8, 2 ** -1, 2 ** -3]
    assert torch.allclose(alibi_slopes(6), torch.tensor(expected))


def test_alibi_bias_hand_case():
    b = alibi_bias(torch.tensor([0.5]), torch.arange(3), torch.arange(3))
    assert torch.allclose(b[0, 2], torch.tensor([-1.0, -0.5, 0.0]))
    assert b[0, 1, 1] == 0


def test_sinusoidal_table_grows_on_demand_and_equals_the_full_table():
    """A declared context of 2^20 allocates 4,096 rows at first; longer sequences grow the
    table, and the values equal the table built all at once."""
    pos = SinusoidalPositions(1 << 20, 8)
    assert pos.table.shape == (4096, 8)
    idx = torch.tensor([0, 5000, 9000])
    assert torch.equal(pos(idx), sinusoidal_table(9001, 8)[idx])
    assert pos.table.shape[0] >= 9001
