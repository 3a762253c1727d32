"""T5-style span-corruption pre-training of an encoder–decoder on plain text
(``task = "span-corruption"``, or ``seq2seq.objective = "span_corruption"``): spans of each
window of ``data.path``'s token stream are replaced by sentinel tokens and the decoder writes
the hidden spans. Configured by the ``[seq2seq]`` table it shares with translation.
"""

from __future__ import annotations

import numpy as np

from ..data import collate
from ..data.batches import batch_offsets
from ..errors import ConfigError
from ..inference.translate import Seq2SeqTokens
from ..objectives.span_corruption import corrupt, sentinel_tokens
from .config import RunConfig
from .driver import RunState
from .lm import token_splits
from .registry import TaskData, register
from .seq2seq import SPECIAL_TOKENS, Seq2SeqConfig, Seq2SeqTask, _nll


def _span_batch(stream: np.ndarray, sentinel_ids: list[int], tokens: Seq2SeqTokens,
                sc: Seq2SeqConfig, B: int, seed: int, step: int, micro: int, rank: int) -> dict:
    """B windows of max_len - 1 tokens, each corrupted with its own seeded spans."""
    L = sc.max_len - 1
    offsets = batch_offsets(len(stream), B, L, seed, step, micro, rank)  # (B,)
    rng = np.random.default_rng([seed, step, micro, rank, 0x5CA7])
    pairs = [corrupt(stream[o:o + L].tolist(), sentinel_ids, rng, sc.noise_density,
                     sc.mean_span_length) for o in offsets.tolist()]
    return collate([p[0] for p in pairs], [p[1] for p in pairs], pad_id=tokens.pad,
                   bos_id=tokens.start, eos_id=tokens.eos)


class SpanCorruptionTask(Seq2SeqTask):
    name = "span-corruption"
    summary = "pre-train an encoder–decoder on text by filling in hidden spans (T5)"

    def check(self, cfg: RunConfig) -> None:
        if cfg.model.context_length < cfg.seq2seq.max_len + 1:
            raise ConfigError(f"model.context_length ({cfg.model.context_length}) must be at "
                              f"least seq2seq.max_len + 1 ({cfg.seq2seq.max_len + 1})")

    def special_tokens(self, cfg: RunConfig) -> list[str]:
        return SPECIAL_TOKENS + sentinel_tokens(cfg.seq2seq.sentinels)

    def prepare(self, run: RunState) -> TaskData:
        cfg, sc, tc, tokenizer = run.cfg, run.cfg.seq2seq, run.cfg.train, run.tokenizer
        tokens = Seq2SeqTokens.from_tokenizer(tokenizer)
        sentinels = sentinel_tokens(sc.sentinels)
        missing = [s for s in sentinels if tokenizer.token_to_id(s) is None]
        if missing:
            raise ConfigError(f"the tokenizer has no sentinel tokens {missing[0]} ...; span "
                              "corruption needs <extra_id_0> ... <extra_id_N>: train the "
                              "tokenizer in this run (leave tokenizer.path empty)")
        sentinel_ids = [tokenizer.token_to_id(s) for s in sentinels]
        splits = token_splits(run, tokens.eos, sc.max_len + 1, f"one window of {sc.max_len}",
                              "seq2seq.max_len")
        B = tc.batch_size
        batch = lambda arr, *a: _span_batch(arr, sentinel_ids, tokens, sc, B, cfg.seed, *a)  # noqa: E731
        val = [batch(splits.val, 10**6 + i, 0, 0) for i in range(tc.eval_batches)] \
            if cfg.data.val_fraction > 0 else []
        return TaskData(
            train_batch=lambda step, micro, rank: batch(splits.train, step, micro, rank),
            evaluate=(lambda m: {"loss": _nll(m, val)}) if val else None,
            tokens_per_batch=B * sc.max_len,
            meta={"train_tokens": int(len(splits.train)), "val_tokens": int(len(splits.val))})


register(SpanCorruptionTask())
