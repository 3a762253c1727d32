"""Language-model pre-training: text -> tokenizer -> token cache -> causal LM -> model directory.

This is what `lmforge train` and `lmforge quickstart` run. Everything it writes lands in
``cfg.out_dir``, which is at once the model directory (config.json, model.safetensors,
tokenizer.json, meta.json) and the run directory (run.toml, checkpoints/, metrics.jsonl/.csv,
loss.png).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import dumps_toml, from_dict, load_file, to_dict
from ..data import build_token_splits, eval_batches, sample_batch
from ..errors import ConfigError, DataError, TokenizerError
from ..io import save_model_dir
from ..io.model_dir import TOKENIZER
from ..models import build_model
from ..objectives import causal_lm_loss
from ..tokenizers import eos_token_id, load_tokenizer, save_tokenizer, train_tokenizer
from ..training import RunConfig, Trainer, TrainResult
from ..training.checkpoint import list_checkpoints
from ..viz import plot_loss_curve

RUN_FILE = "run.toml"


@dataclass
class LMRun:
    out_dir: Path
    result: TrainResult
    config: RunConfig
    tokenizer: object
    model: torch.nn.Module
    plot: Path | None


def _paths(cfg: RunConfig) -> list[str]:
    paths = cfg.data.path if isinstance(cfg.data.path, list) else [cfg.data.path]
    paths = [p for p in paths if p]
    if not paths:
        raise ConfigError("data.path is empty: set it in the config file or with "
                          "--set data.path=PATH (a text file, a directory or a JSONL file)")
    return paths


def _tokenizer(cfg: RunConfig, out: Path, resume: bool, paths: list[str]):
    saved = out / TOKENIZER
    if resume and saved.is_file():
        return load_tokenizer(saved)
    if cfg.tokenizer.path:
        tok = load_tokenizer(cfg.tokenizer.path)
    else:
        tok = train_tokenizer(paths, kind=cfg.tokenizer.kind, vocab_size=cfg.tokenizer.vocab_size)
    save_tokenizer(tok, saved)
    return tok


def _check_resumable(cfg: RunConfig, out: Path) -> None:
    """A resumed run must build the same model on the same data as the run it continues."""
    f = out / RUN_FILE
    if not f.is_file():
        return
    old = from_dict(RunConfig, load_file(f))
    for section in ("model", "data", "tokenizer"):
        a, b = to_dict(getattr(old, section)), to_dict(getattr(cfg, section))
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k != "vocab_size")
        if diff:
            raise ConfigError(
                f"--resume: {section}.{diff[0]} differs from the run being resumed ({f}: "
                f"{a.get(diff[0])!r}, now {b.get(diff[0])!r}); resume with the same config or "
                "start a new out_dir")


def train_lm(cfg: RunConfig, *, resume: bool = False, overwrite: bool = False,
             stop_at: int | None = None) -> LMRun:
    out = Path(cfg.out_dir)
    if resume:
        _check_resumable(cfg, out)
    elif list_checkpoints(out / "checkpoints"):
        if not overwrite:
            raise ConfigError(
                f"{out} already holds checkpoints of an earlier run; pass --resume to continue "
                "it, --overwrite to start again from scratch, or choose another out_dir")
        shutil.rmtree(out / "checkpoints")
    out.mkdir(parents=True, exist_ok=True)
    paths = _paths(cfg)
    tokenizer = _tokenizer(cfg, out, resume, paths)
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    if cfg.model.vocab_size == 0:
        cfg.model = dataclasses.replace(cfg.model, vocab_size=vocab)
    elif cfg.model.vocab_size < vocab:
        raise TokenizerError(
            f"model.vocab_size is {cfg.model.vocab_size} but the tokenizer has {vocab} tokens; "
            "set model.vocab_size = 0 to take it from the tokenizer")
    eos = eos_token_id(tokenizer)
    cache_dir = cfg.data.cache_dir or str(out / "data-cache")
    splits = build_token_splits(paths, tokenizer, cache_dir, val_fraction=cfg.data.val_fraction,
                                text_field=cfg.data.text_field, eos_id=eos)
    seq_len = cfg.train.seq_len or cfg.model.context_length
    if seq_len > cfg.model.context_length:
        raise ConfigError(f"train.seq_len ({seq_len}) is longer than model.context_length "
                          f"({cfg.model.context_length}); lower it or set it to 0")
    for name, arr in (("training", splits.train), ("validation", splits.val)):
        if name == "validation" and cfg.data.val_fraction == 0:
            continue
        if len(arr) < seq_len + 1:
            raise DataError(
                f"the {name} split of {', '.join(map(str, paths))} has {len(arr)} tokens, fewer "
                f"than one sequence of {seq_len + 1}; add more text or lower train.seq_len / "
                "model.context_length" + (" / raise data.val_fraction" if name == "validation" else ""))
    (out / RUN_FILE).write_text(dumps_toml(to_dict(cfg)), encoding="utf-8")

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
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "platform": platform.platform()},
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
    plot = None
    if trainer.dist.is_main and result.history:
        plot = plot_loss_curve(result.history, out / "loss.png", title=f"{out.name}: loss")
        (out / "result.json").write_text(json.dumps(
            {**dataclasses.asdict(result), "history": None, "wall_s": time.time() - t0},
            indent=2), encoding="utf-8")
    return LMRun(out, result, cfg, tokenizer, model, plot)


