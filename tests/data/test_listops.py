"""The ListOps generator (LRA spec): every label equals an independent stack evaluator's value
(statistics.median for MED, as LRA's int(np.median)); lengths in range; the operators, depth and
argument counts within the limits; the same seed gives the same examples."""

import statistics

import pytest

from lmforge.data.listops import COMPACT, OPERATORS, compact, generate
from lmforge.errors import ConfigError

FUNCS = {"[MIN": min, "[MAX": max, "[SM": lambda a: sum(a) % 10,
         "[MED": lambda a: int(statistics.median(a))}


def evaluate(tokens):
    """Stack evaluation of a token list; also returns the deepest nesting and the most args."""
    stack, depth, most = [[]], 0, 0
    for t in tokens:
        if t in FUNCS:
            stack.append([t])
            depth = max(depth, len(stack) - 1)
        elif t == "]":
            op, *args = stack.pop()
            most = max(most, len(args))
            stack[-1].append(FUNCS[op](args))
        else:
            stack[-1].append(int(t))
    (value,) = stack[0]
    return value, depth, most


@pytest.fixture(scope="module")
def short():
    return generate(60, seed=3, min_length=40, max_length=300)


def test_labels_match_an_independent_evaluator(short):
    for ex in short:
        value, depth, most = evaluate(ex.tokens)
        assert ex.label == value
        assert 1 <= depth <= 10 and 2 <= most <= 10
        assert 40 <= len(ex.tokens) <= 300


def test_lra_lengths_and_every_operator_and_label_appear():
    ex = generate(30, seed=0)  # LRA's defaults: 500-2000 tokens
    assert all(500 <= len(e.tokens) <= 2000 for e in ex)
    assert all(evaluate(e.tokens)[0] == e.label for e in ex)
    tokens = {t for e in ex for t in e.tokens}
    assert set(OPERATORS) <= tokens and len({e.label for e in ex}) >= 5


def test_deterministic_per_seed(short):
    again = generate(60, seed=3, min_length=40, max_length=300)
    assert [e.tokens for e in again] == [e.tokens for e in short]
    other = generate(60, seed=4, min_length=40, max_length=300)
    assert [e.tokens for e in other] != [e.tokens for e in short]


def test_limits_are_kept():
    for e in generate(20, seed=1, min_length=10, max_length=200, max_depth=3, max_args=4):
        _, depth, most = evaluate(e.tokens)
        assert depth <= 3 and most <= 4


def test_compact_is_one_char_per_token(short):
    e = short[0]
    text = compact(e.tokens)
    assert len(text) == len(e.tokens)
    inverse = {v: k for k, v in COMPACT.items()}
    assert [inverse[c] for c in text] == e.tokens
    assert e.text.split() == e.tokens


def test_bad_arguments():
    with pytest.raises(ConfigError, match="min_length"):
        generate(5, min_length=1)
    with pytest.raises(ConfigError, match="found only"):
        generate(5, min_length=3, max_length=3, max_depth=1, max_tries=50)
