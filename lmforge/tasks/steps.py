"""Steps every training task shares, run by :mod:`lmforge.tasks.driver`: the output directory
(fresh, resumed or overwritten), the tokenizer, the vocabulary size, provenance for meta.json,
and the end-of-run files. Task modules use them too where they do something of their own."""

from __future__ import annotations

import dataclasses
import json
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..config import dumps_toml, from_dict, load_file, to_dict
from ..errors import ConfigError, TokenizerError
from ..files.guard import check_not_input
from ..modeldir.directory import TOKENIZER
from ..tokenizers import load_tokenizer, save_tokenizer, train_tokenizer
from ..training import Trainer, TrainResult
from ..training.checkpoint import list_checkpoints
from ..viz import plot_loss_curve

if TYPE_CHECKING:  # (type hints only: config.py imports the registry, which imports this)
    from .config import RunConfig

RUN_FILE = "run.toml"


@dataclass
class TrainRun:
    out_dir: Path
    result: TrainResult
    config: RunConfig
    tokenizer: object
    model: torch.nn.Module
    plot: Path | None
    metrics: dict = field(default_factory=dict)
    """Held-out task metrics (for masked LMs: mlm_accuracy, nsp_accuracy, ...)."""
    report: str = ""
    """Anything else worth printing at the end (classifiers: confusion matrices, reports)."""


def data_paths(cfg: RunConfig) -> list[str]:
    paths = cfg.data.path if isinstance(cfg.data.path, list) else [cfg.data.path]
    paths = [p for p in paths if p]
    if not paths:
        raise ConfigError("data.path is empty: set it in the config file or with "
                          "--set data.path=PATH (a text file, a directory or a JSONL file)")
    return paths


def check_resumable(cfg: RunConfig, out: Path, table: str = "") -> None:
    """A resumed run must be the same task, build the same model on the same data as the run
    it continues (its ``run.toml``): [model], [data], [tokenizer] and the task's ``table``."""
    f = out / RUN_FILE
    if not f.is_file():
        return
    old = from_dict(type(cfg), load_file(f))
    if old.task != cfg.task:
        raise ConfigError(f"--resume: task differs from the run being resumed ({f}: "
                          f"{old.task!r}, now {cfg.task!r}); resume with the same config or "
                          "start a new out_dir")
    for section in ("model", "data", "tokenizer", *([table] if table else [])):
        a, b = to_dict(getattr(old, section)), to_dict(getattr(cfg, section))
        diff = [d for d in _differing(a, b) if d[0] not in ("vocab_size", "src_vocab_size")]
        if diff:
            key, was, now = diff[0]
            raise ConfigError(
                f"--resume: {section}.{key} differs from the run being resumed ({f}: "
                f"{was!r}, now {now!r}); resume with the same config or start a new out_dir")


def _differing(a: dict, b: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted key, old value, new value) of what differs between two tables, sorted by key;
    nested tables (``[sft.lora]``) are compared field by field."""
    out: list[tuple[str, object, object]] = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differing(x, y, f"{prefix}{k}.")
        elif x != y:
            out.append((f"{prefix}{k}", x, y))
    return out


def check_inputs(cfg: RunConfig, table: str = "") -> None:
    """Refuse an out_dir equal to or inside the task's ``init_from`` model (``[sft]``,
    ``[classify]``: either way round), a data path or ``tokenizer.path``."""
    init_from = getattr(getattr(cfg, table, None), "init_from", "") if table else ""
    if init_from:
        check_not_input(cfg.out_dir, [init_from], what="out_dir")
    paths = cfg.data.path if isinstance(cfg.data.path, list) else [cfg.data.path]
    check_not_input(cfg.out_dir, [*paths, cfg.tokenizer.path], what="out_dir", both_ways=False)


def prepare_out_dir(cfg: RunConfig, resume: bool, overwrite: bool, table: str = "") -> Path:
    """``cfg.out_dir``, created; refuses to train over an earlier run's checkpoints unless
    resuming it (same task and config, see :func:`check_resumable`) or told to overwrite,
    and an out_dir that is a file or equal to/inside the run's inputs (see :func:`check_inputs`)."""
    out = Path(cfg.out_dir)
    check_inputs(cfg, table)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out_dir {out} is an existing file, not a directory; choose a "
                          "directory path (or remove the file)")
    if resume:
        if not list_checkpoints(out / "checkpoints"):
            raise ConfigError(f"--resume: {out} holds no checkpoint to resume; start the run "
                              "without --resume")
        check_resumable(cfg, out, table)
    elif list_checkpoints(out / "checkpoints"):
        if not overwrite:
            raise ConfigError(
                f"{out} already holds checkpoints of an earlier run; pass --resume to continue "
                "it, --overwrite to start again from scratch, or choose another out_dir")
        shutil.rmtree(out / "checkpoints")
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_tokenizer(cfg: RunConfig, out: Path, resume: bool, paths: list[str],
                  special_tokens: list[str] | None = None):
    """The run's tokenizer: the saved one when resuming, else ``tokenizer.path``, else one
    trained on the data (with ``special_tokens``, default: the kind's own); saved in ``out``."""
    saved = out / TOKENIZER
    if resume and saved.is_file():
        return load_tokenizer(saved)
    if cfg.tokenizer.path:
        tok = load_tokenizer(cfg.tokenizer.path)
    else:
        tok = train_tokenizer(paths, kind=cfg.tokenizer.kind, vocab_size=cfg.tokenizer.vocab_size,
                              special_tokens=special_tokens)
    save_tokenizer(tok, saved)
    return tok


def fit_vocab(cfg: RunConfig, tokenizer) -> int:
    """Set ``model.vocab_size`` from the tokenizer (when 0) or check that it is large enough;
    returns the tokenizer's vocabulary size."""
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    if cfg.model.vocab_size == 0:
        cfg.model = dataclasses.replace(cfg.model, vocab_size=vocab)
    elif cfg.model.vocab_size < vocab:
        raise TokenizerError(
            f"model.vocab_size is {cfg.model.vocab_size} but the tokenizer has {vocab} tokens; "
            "set model.vocab_size = 0 to take it from the tokenizer")
    return vocab


def seq_len_of(cfg: RunConfig) -> int:
    seq_len = cfg.train.seq_len or cfg.model.context_length
    if seq_len > cfg.model.context_length:
        raise ConfigError(f"train.seq_len ({seq_len}) is longer than model.context_length "
                          f"({cfg.model.context_length}); lower it or set it to 0")
    return seq_len


def write_run_file(cfg: RunConfig, out: Path) -> None:
    (out / RUN_FILE).write_text(dumps_toml(to_dict(cfg)), encoding="utf-8")


def machine() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__,
            "platform": platform.platform()}


def finish_run(trainer: Trainer, result: TrainResult, out: Path, t0: float) -> Path | None:
    """On the main process: the loss plot and result.json. Returns the plot's path."""
    if not (trainer.dist.is_main and result.history):
        return None
    plot = plot_loss_curve(result.history, out / "loss.png", title=f"{out.name}: loss")
    (out / "result.json").write_text(json.dumps(
        {**dataclasses.asdict(result), "history": None, "wall_s": time.time() - t0},
        indent=2), encoding="utf-8")
    return plot

