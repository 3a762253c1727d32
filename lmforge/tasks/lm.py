"""Language-model pre-training: text -> tokenizer -> token cache -> causal LM -> model directory.

This is what `lmforge train` and `lmforge quickstart` run. Everything it writes lands in
``cfg.out_dir``, which is at once the model directory (config.json, model.safetensors,
tokenizer.json, meta.json) and the run directory (run.toml, checkpoints/, metrics.jsonl/.csv,
loss.png).
"""

from __future__ import annotations

import time

import torch

from ..config import to_dict
from ..data import build_token_splits, eval_batches, sample_batch
from ..errors import ConfigError, DataError
from ..io import save_model_dir
from ..models import build_model
from ..objectives import causal_lm_loss
from ..tokenizers import eos_token_id
from ..training import RunConfig, Trainer
from .common import (RUN_FILE, TrainRun, data_paths, finish, fit_vocab, machine,  # noqa: F401
                     prepare_out_dir, run_tokenizer, seq_len_of, write_run_file)

LMRun = TrainRun  # the name this module has always returned


def train_lm(cfg: RunConfig, *, resume: bool = False, overwrite: bool = False,
             stop_at: int | None = None) -> TrainRun:
    if cfg.model.arch != "decoder":
        raise ConfigError(f"train_lm trains decoders (model.arch = \"decoder\"), got "
                          f"{cfg.model.arch!r}; use lmforge.tasks.train_task, which picks the task")
    out = prepare_out_dir(cfg, resume, overwrite)
    paths = data_paths(cfg)
    tokenizer = run_tokenizer(cfg, out, resume, paths)
    vocab = fit_vocab(cfg, tokenizer)
    eos = eos_token_id(tokenizer)
    cache_dir = cfg.data.cache_dir or str(out / "data-cache")
    splits = build_token_splits(paths, tokenizer, cache_dir, val_fraction=cfg.data.val_fraction,
                                text_field=cfg.data.text_field, eos_id=eos)
    seq_len = seq_len_of(cfg)
    for name, arr in (("training", splits.train), ("validation", splits.val)):
        if name == "validation" and cfg.data.val_fraction == 0:
            continue
        if len(arr) < seq_len + 1:
            raise DataError(
                f"the {name} split of {', '.join(map(str, paths))} has {len(arr)} tokens, fewer "
                f"than one sequence of {seq_len + 1}; add more text or lower train.seq_len / "
                "model.context_length" + (" / raise data.val_fraction" if name == "validation" else ""))
    write_run_file(cfg, out)

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model)
    B, tc = cfg.train.batch_size, cfg.train
    meta_base = {
        "task": "causal-lm",
        "data": {"paths": [str(p) for p in paths], "sources": len(splits.sources),
                 "train_tokens": int(len(splits.train)), "val_tokens": int(len(splits.val))},
        "tokenizer": {"kind": "file" if cfg.tokenizer.path else cfg.tokenizer.kind,
                      "vocab_size": vocab},
        "parameters": model.num_params(),
        "run_config": to_dict(cfg),
        "machine": machine(),
    }

    def on_save(m, summary: dict) -> None:
        save_model_dir(out, m, tokenizer, {**meta_base, "training": summary})

    trainer = Trainer(
        model, causal_lm_loss,
        train_batch=lambda step, micro, rank: sample_batch(splits.train, B, seq_len, cfg.seed,
                                                           step, micro, rank),
        eval_batches=(lambda: eval_batches(splits.val, B, seq_len, tc.eval_batches))
        if len(splits.val) > seq_len else None,
        cfg=tc, out_dir=out, tokens_per_batch=B * seq_len, on_save=on_save)
    t0 = time.time()
    result = trainer.fit(resume=resume, stop_at=stop_at)
    plot = finish(trainer, result, out, t0)
    return TrainRun(out, result, cfg, tokenizer, model, plot)
