"""ListOps (Nangia & Bowman 2018) as generated for the Long Range Arena (Tay et al. 2021):
nested lists of the operators MIN, MAX, MED (median) and SM (sum modulo 10) over the digits
0-9, up to ``max_depth`` deep with 2..``max_args`` arguments each; the label is the value
(10 classes). LRA keeps the expressions of 500-2000 tokens.

    [MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]  ->  5

The generator follows LRA's ``generate_tree``: below the maximum depth a node is a digit with
probability 0.75, else an operator with ``randint(2, max_args)`` children; trees outside the
length range are drawn again. The length counted is the number of tokens (operators, digits
and closing brackets), which is LRA's node count; LRA's text adds parentheses that carry no
information, left out here. Everything is a pure function of the seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..errors import ConfigError

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
"""The operator tokens; ``]`` closes each list."""
VALUE_P = 0.25
"""LRA: a node below the maximum depth is a digit when random() > VALUE_P."""
COMPACT = {"[MIN": "N", "[MAX": "X", "[MED": "D", "[SM": "S", "]": "]",
           **{str(d): str(d) for d in range(10)}}
"""One character per token (:func:`compact`), for a character tokenizer."""


def apply(op: str, args: list[int]) -> int:
    """The value of operator ``op`` on ``args``. MED is LRA's ``int(np.median(args))``: for an
    even count the mean of the two middle values, rounded down."""
    if op == "[MIN":
        return min(args)
    if op == "[MAX":
        return max(args)
    if op == "[SM":
        return sum(args) % 10
    s = sorted(args)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) // 2


def _tree(rng: random.Random, depth: int, max_depth: int, max_args: int,
          out: list[str]) -> int:
    """Append one random (sub)tree's tokens to ``out``; returns its value."""
    r = rng.random() if depth < max_depth else 1.0
    if r > VALUE_P:
        value = rng.randrange(10)
        out.append(str(value))
        return value
    n_args = rng.randint(2, max_args)
    op = rng.choice(OPERATORS)
    out.append(op)
    args = [_tree(rng, depth + 1, max_depth, max_args, out) for _ in range(n_args)]
    out.append("]")
    return apply(op, args)


@dataclass(frozen=True)
class ListOpsExample:
    tokens: list[str]
    """The expression, one token per item: ``[MAX``, digits, ``]``."""
    label: int
    """Its value, 0-9."""

    @property
    def text(self) -> str:
        """Space-separated tokens, LRA's notation without the parentheses."""
        return " ".join(self.tokens)


def generate(n: int, seed: int = 0, min_length: int = 500, max_length: int = 2000,
             max_depth: int = 10, max_args: int = 10, max_tries: int = 1_000_000,
             ) -> list[ListOpsExample]:
    """``n`` expressions of ``min_length``..``max_length`` tokens (inclusive), drawn with
    ``seed``; the same arguments give the same examples. A lone digit (1 token) is no
    expression, so ``min_length`` >= 3."""
    if n < 0 or min_length < 3 or max_length < min_length or max_depth < 1 or max_args < 2:
        raise ConfigError(f"listops: need n >= 0, 3 <= min_length <= max_length, max_depth >= 1 "
                          f"and max_args >= 2; got n={n}, lengths {min_length}..{max_length}, "
                          f"max_depth={max_depth}, max_args={max_args}")
    rng = random.Random(seed)
    out: list[ListOpsExample] = []
    for _ in range(max_tries):
        if len(out) == n:
            return out
        tokens: list[str] = []
        value = _tree(rng, 1, max_depth, max_args, tokens)  # LRA: generate_tree(1, ...)
        if min_length <= len(tokens) <= max_length:
            out.append(ListOpsExample(tokens, value))
    if len(out) < n:
        raise ConfigError(f"listops: found only {len(out)} of {n} expressions of "
                          f"{min_length}..{max_length} tokens in {max_tries} draws; widen the "
                          "range or raise max_depth / max_args")
    return out


def compact(tokens: list[str]) -> str:
    """The expression as one character per token (N X D S for MIN MAX MED SM): a character
    tokenizer then sees exactly one token per ListOps token."""
    return "".join(COMPACT[t] for t in tokens)
