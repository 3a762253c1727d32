"""T5-style span corruption (encoder-decoder pre-training).

A share ``noise_density`` of a sequence's tokens is chosen in contiguous spans whose mean length
is ``mean_span_length``. The encoder sees the sequence with every noise span replaced by one
sentinel token; the decoder must produce each sentinel followed by the span it stands for, and
one last sentinel to close the target::

    ids     : The  cute dog  walks in   the  park
    input   : The  <extra_id_0>  walks <extra_id_1> park
    target  : <extra_id_0> cute dog <extra_id_1> in the <extra_id_2>

Span choice follows T5's ``random_spans_noise_mask``: ``round(length * density)`` noise tokens
(at least 1, at most ``length - 1``), ``round(noise / mean_span_length)`` spans (at least 1), the
noise and the non-noise tokens each split into that many random non-empty segments, and the
segments interleaved starting with non-noise (so the sequence always ends in a noise span).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import ConfigError, DataError

SENTINEL_FORMAT = "<extra_id_{}>"


def sentinel_tokens(n: int) -> list[str]:
    """The first ``n`` sentinel token strings: ``<extra_id_0>`` ... ``<extra_id_{n-1}>``."""
    if n < 0:
        raise ConfigError(f"the number of sentinel tokens must be >= 0, got {n}")
    return [SENTINEL_FORMAT.format(i) for i in range(n)]


def _check(length: int, noise_density: float, mean_span_length: float) -> None:
    if length < 2:
        raise DataError(f"span corruption needs a sequence of at least 2 tokens (one noise, one "
                        f"kept), got {length}; drop or merge shorter sequences")
    if not 0.0 < noise_density < 1.0:
        raise ConfigError(f"noise_density must be in (0, 1) (T5 uses 0.15), got {noise_density}")
    if not mean_span_length >= 1.0:
        raise ConfigError(f"mean_span_length must be >= 1 (T5 uses 3.0), got {mean_span_length}")


def num_noise_spans(length: int, noise_density: float, mean_span_length: float) -> tuple[int, int]:
    """(noise tokens, noise spans) that :func:`span_mask` picks for a sequence of ``length``.

    Both are fixed by the arguments (only where the spans lie is random), so callers can size
    buffers or check that there are enough sentinels (spans + 1) before corrupting.
    """
    _check(length, noise_density, mean_span_length)
    n_noise = min(max(int(round(length * noise_density)), 1), length - 1)
    n_spans = max(int(round(n_noise / mean_span_length)), 1)
    # every span and every gap before it must hold at least one token
    n_spans = min(n_spans, n_noise, length - n_noise)
    return n_noise, n_spans


def _random_segmentation(num_items: int, num_segments: int,
                         rng: np.random.Generator) -> np.ndarray:
    """Split ``num_items`` into ``num_segments`` random positive lengths (summing to the total),
    every split uniformly likely."""
    # choose num_segments - 1 distinct cut points among the num_items - 1 gaps between items
    cuts = np.sort(rng.choice(num_items - 1, size=num_segments - 1, replace=False)) + 1
    bounds = np.concatenate([[0], cuts, [num_items]])  # (num_segments + 1,)
    return np.diff(bounds)  # (num_segments,)


def span_mask(length: int, noise_density: float, mean_span_length: float,
              rng: np.random.Generator) -> np.ndarray:
    """(length,) bool: True at the noise tokens, laid out in spans as T5 does (see module doc)."""
    n_noise, n_spans = num_noise_spans(length, noise_density, mean_span_length)
    noise_lengths = _random_segmentation(n_noise, n_spans, rng)  # (S,)
    keep_lengths = _random_segmentation(length - n_noise, n_spans, rng)  # (S,)
    # interleave: keep_0 noise_0 keep_1 noise_1 ... (starting with kept tokens)
    runs = np.stack([keep_lengths, noise_lengths], axis=1).reshape(-1)  # (2S,)
    flags = np.tile([False, True], n_spans)  # (2S,)
    return np.repeat(flags, runs)  # (length,)


def corrupt(ids: Sequence[int], sentinel_ids: Sequence[int], rng: np.random.Generator,
            noise_density: float = 0.15,
            mean_span_length: float = 3.0) -> tuple[list[int], list[int]]:
    """Span-corrupt one sequence: returns (encoder input, decoder target).

    In the input each noise span becomes one sentinel (``sentinel_ids[0]``, ``[1]``, ... in
    order); the target is ``sentinel_0 span_0 sentinel_1 span_1 ... sentinel_S`` — the final
    sentinel closes it as in T5, so ``S`` spans need ``S + 1`` sentinels. Add EOS (or any other
    special token) yourself afterwards.
    """
    ids = [int(t) for t in ids]
    n_noise, n_spans = num_noise_spans(len(ids), noise_density, mean_span_length)
    if n_spans + 1 > len(sentinel_ids):
        raise ConfigError(
            f"a sequence of {len(ids)} tokens at noise_density={noise_density} and "
            f"mean_span_length={mean_span_length} has {n_spans} noise spans and needs "
            f"{n_spans + 1} sentinel ids (one per span plus the closing one), but only "
            f"{len(sentinel_ids)} were given; add sentinel tokens to the tokenizer "
            f"(see sentinel_tokens({n_spans + 1})) or use shorter sequences")
    noise = span_mask(len(ids), noise_density, mean_span_length, rng)  # (T,)
    inputs: list[int] = []
    target: list[int] = []
    span = -1
    for i, (tok, is_noise) in enumerate(zip(ids, noise.tolist())):
        if not is_noise:
            inputs.append(tok)
            continue
        if i == 0 or not noise[i - 1]:  # first token of a new span
            span += 1
            sentinel = int(sentinel_ids[span])
            inputs.append(sentinel)
            target.append(sentinel)
        target.append(tok)
    target.append(int(sentinel_ids[span + 1]))
    return inputs, target
