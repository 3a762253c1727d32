"""Causal language-model pre-training (``task = "causal-lm"``, the default for decoders and
for the recurrent baselines rnn/lstm/gru): text -> tokenizer -> token cache -> next-token
prediction -> model directory. A recurrent LM trains on the same windows as a decoder, each
from a zero state; what it cannot do is refused by :func:`check_recurrent`.

This is what `lmforge train` and `lmforge quickstart` run for a decoder. Everything it writes
lands in ``cfg.out_dir``, which is at once the model directory (config.json,
model.safetensors, tokenizer.json, meta.json) and the run directory (run.toml, checkpoints/,
metrics.jsonl/.csv, loss.png).
"""

from __future__ import annotations

import torch.nn.functional as F

from ..data import build_token_splits, eval_batches, sample_batch
from ..data.streams import segments_per_stream, stream_batch, stream_segments
from ..errors import ConfigError, DataError
from ..evaluation.perplexity import stream_loss
from ..models.config import RECURRENT_ARCHS
from ..objectives import causal_lm_loss
from ..tokenizers import eos_token_id
from .config import RunConfig
from .driver import RunState, train_task
from .registry import Task, TaskData, register
from .steps import TrainRun, data_paths, seq_len_of

LMRun = TrainRun  # the name this module has always returned


def token_splits(run: RunState, eos_id: int | None, min_tokens: int, what: str, fix: str):
    """``data.path`` tokenised into the memory-mapped training and validation streams (the
    last ``data.val_fraction`` held out), each checked to hold at least ``min_tokens``."""
    cfg = run.cfg
    paths = data_paths(cfg)
    splits = build_token_splits(paths, run.tokenizer, cfg.data.cache_dir or str(run.out / "data-cache"),
                                val_fraction=cfg.data.val_fraction, text_field=cfg.data.text_field,
                                eos_id=eos_id)
    for name, arr in (("training", splits.train), ("validation", splits.val)):
        if name == "validation" and cfg.data.val_fraction == 0:
            continue
        if len(arr) < min_tokens:
            raise DataError(
                f"the {name} split of {', '.join(map(str, paths))} has {len(arr)} tokens, fewer "
                f"than {what}; add more text or lower {fix}"
                + (" / raise data.val_fraction" if name == "validation" else ""))
    return splits


def _core(model):
    """The model inside a DDP / torch.compile wrapper."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


class SegmentObjective:
    """Next-token loss over consecutive segments (Transformer-XL): batches ``(x, y, first)``
    from :func:`~lmforge.data.streams.stream_batch`; the memory is carried from each call to
    the next and dropped when a stream starts again (``first``) or the batch changes. A
    resumed run starts with an empty memory."""

    def __init__(self):
        self.memory = None

    def __call__(self, model, batch):
        x, y, first = batch
        if self.memory is None or bool(first) or self.memory.batch() not in (None, x.shape[0]):
            self.memory = _core(model).new_memory(segment=x.shape[1])
        logits = model(x, memory=self.memory)  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())


def segment_data(run: RunState, splits, seq_len: int) -> TaskData:
    """TaskData for a model with an XL memory: contiguous streams, evaluated with the memory."""
    tc = run.cfg.train
    B, accum = tc.batch_size, tc.grad_accum
    if segments_per_stream(len(splits.train), B, seq_len) == 0:
        raise DataError(f"the training split ({len(splits.train)} tokens) is too short for "
                        f"{B} streams of one segment of {seq_len + 1} tokens; lower "
                        "train.batch_size or train.seq_len, or add more text")
    evaluate = None
    if len(splits.val) > seq_len:
        evaluate = lambda model: stream_loss(  # noqa: E731
            model, stream_segments(splits.val, B, seq_len, tc.eval_batches))
    return TaskData(
        train_batch=lambda step, micro, rank: stream_batch(
            splits.train, B, seq_len, step * accum + micro, rank, run.world_size),
        evaluate=evaluate, tokens_per_batch=B * seq_len)


RECURRENT_REFUSED = {
    "reversible": (False, "reversible layers are transformer blocks"),
    "bidirectional": (False, "a language model reads left to right"),
    "type_vocab_size": (0, "token types are for encoders"),
    "embed_norm": (False, "the recurrent LM has no embedding norm"),
    "scale_embeddings": (False, "the recurrent LM does not scale its embeddings"),
    "output_bias": (False, "the recurrent LM's output layer has no bias"),
}
"""[model] fields a recurrent LM cannot honour, with their only accepted value and why: set
to anything else, the run is refused. The transformer's shape fields (positional, n_head,
attention, activation, norm, d_ff, ...) are ignored instead: presets set them, and switching
model.arch alone must train (docs/baselines.md)."""


def check_recurrent(cfg: RunConfig) -> None:
    """Refuse, in one line naming the field, what a recurrent (rnn/lstm/gru) LM cannot do."""
    m, tc = cfg.model, cfg.train
    arch = f"model.arch = {m.arch!r}"
    if m.heads == "classifier":
        raise ConfigError(f"model.heads = 'classifier' makes an {m.arch} classifier, which "
                          "task = 'causal-lm' cannot train; use task = 'classify', or leave "
                          "model.heads unset for a language model")
    for name, (ok, why) in RECURRENT_REFUSED.items():
        if getattr(m, name) != ok:
            raise ConfigError(f"model.{name}: {arch} is a recurrent LM ({why}); set "
                              f"{name} = {str(ok).lower()}")
    if tc.activation_checkpointing != "none":
        raise ConfigError(f"train.activation_checkpointing: {arch} has no transformer blocks "
                          "to recompute; set it to \"none\"")
    if tc.parallel == "fsdp":
        raise ConfigError(f"train.parallel = \"fsdp\" shards per transformer block, which "
                          f"{arch} has none of; use parallel = \"ddp\"")


class CausalLMTask(Task):
    name = "causal-lm"
    summary = "pre-train a decoder (or an rnn/lstm/gru baseline) on text by next-token prediction"
    archs = ("decoder", *RECURRENT_ARCHS)
    default_arch = ("decoder", *RECURRENT_ARCHS)
    objective = staticmethod(causal_lm_loss)

    def claims(self, cfg: RunConfig) -> bool:
        """An rnn/lstm/gru with ``heads = "classifier"`` is a classifier, not a language model."""
        return cfg.model.heads != "classifier"

    def check(self, cfg: RunConfig) -> None:
        if cfg.model.arch in RECURRENT_ARCHS:
            check_recurrent(cfg)

    def prepare(self, run: RunState) -> TaskData:
        cfg, tc = run.cfg, run.cfg.train
        seq_len = seq_len_of(cfg)
        splits = token_splits(run, eos_token_id(run.tokenizer), seq_len + 1,
                              f"one sequence of {seq_len + 1}",
                              "train.seq_len / model.context_length")
        B, seed = tc.batch_size, cfg.seed
        meta = {"paths": [str(p) for p in data_paths(cfg)], "sources": len(splits.sources),
                "train_tokens": int(len(splits.train)), "val_tokens": int(len(splits.val))}
        if cfg.model.memory_length > 0:  # Transformer-XL: consecutive segments
            data = segment_data(run, splits, seq_len)
            data.meta = dict(meta, segments="contiguous streams")
            return data
        return TaskData(
            train_batch=lambda step, micro, rank: sample_batch(splits.train, B, seq_len, seed,
                                                               step, micro, rank),
            eval_batches=(lambda: eval_batches(splits.val, B, seq_len, tc.eval_batches))
            if len(splits.val) > seq_len else None,
            tokens_per_batch=B * seq_len, meta=meta)

    def make_objective(self, run: RunState):
        if run.cfg.model.memory_length > 0:
            return SegmentObjective()
        return super().make_objective(run)


register(CausalLMTask())


def train_lm(cfg: RunConfig, **kw) -> TrainRun:
    """Train a decoder (or rnn/lstm/gru) with the causal-LM task (:func:`~lmforge.tasks.train_task` with
    ``task = "causal-lm"``); keyword arguments as there."""
    cfg.task = cfg.task or CausalLMTask.name
    return train_task(cfg, **kw)
