"""Causal language-model pre-training (``task = "causal-lm"``, the default for decoders):
text -> tokenizer -> token cache -> next-token prediction -> model directory.

This is what `lmforge train` and `lmforge quickstart` run for a decoder. Everything it writes
lands in ``cfg.out_dir``, which is at once the model directory (config.json,
model.safetensors, tokenizer.json, meta.json) and the run directory (run.toml, checkpoints/,
metrics.jsonl/.csv, loss.png).
"""

from __future__ import annotations

from ..data import build_token_splits, eval_batches, sample_batch
from ..errors import DataError
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


class CausalLMTask(Task):
    name = "causal-lm"
    summary = "pre-train a decoder on text by next-token prediction"
    archs = ("decoder",)
    default_arch = "decoder"
    objective = staticmethod(causal_lm_loss)

    def prepare(self, run: RunState) -> TaskData:
        cfg, tc = run.cfg, run.cfg.train
        seq_len = seq_len_of(cfg)
        splits = token_splits(run, eos_token_id(run.tokenizer), seq_len + 1,
                              f"one sequence of {seq_len + 1}",
                              "train.seq_len / model.context_length")
        B, seed = tc.batch_size, cfg.seed
        return TaskData(
            train_batch=lambda step, micro, rank: sample_batch(splits.train, B, seq_len, seed,
                                                               step, micro, rank),
            eval_batches=(lambda: eval_batches(splits.val, B, seq_len, tc.eval_batches))
            if len(splits.val) > seq_len else None,
            tokens_per_batch=B * seq_len,
            meta={"paths": [str(p) for p in data_paths(cfg)], "sources": len(splits.sources),
                  "train_tokens": int(len(splits.train)), "val_tokens": int(len(splits.val))})


register(CausalLMTask())


def train_lm(cfg: RunConfig, **kw) -> TrainRun:
    """Train a decoder with the causal-LM task (:func:`~lmforge.tasks.train_task` with
    ``task = "causal-lm"``); keyword arguments as there."""
    cfg.task = cfg.task or CausalLMTask.name
    return train_task(cfg, **kw)
