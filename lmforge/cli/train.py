"""``lmforge train``: train a model from a TOML config, a preset and ``--set`` overrides
(:func:`lmforge.tasks.train_task`); prints the result and where the model is."""

from __future__ import annotations

import argparse
import math

from ..errors import ConfigError
from ..tasks import RunConfig, train_task
from .output import say
from .registry import Command


def train(config: str | None = None, overrides: list[str] | None = None, preset: str | None = None,
          resume: bool = False, overwrite: bool = False):
    """Load the run config (``config`` and/or ``preset``, then ``overrides``), train it and
    print the summary; returns the task's :class:`~lmforge.tasks.common.TrainRun`."""
    if not config and not preset:
        raise ConfigError("give a config file (lmforge train CONFIG.toml) or --preset NAME")
    cfg = RunConfig.load(config, overrides, preset)
    run = train_task(cfg, resume=resume, overwrite=overwrite)
    r = run.result
    say(f"done: {r.step} steps, {r.tokens:,} tokens in {r.elapsed_s:.0f} s "
        f"({r.tokens_per_s:,.0f} tokens/s)")
    if r.val_loss is not None:
        ppl = f", perplexity {math.exp(r.val_loss):.2f}" if cfg.task == "pretrain" else ""
        say(f"  validation loss {r.val_loss:.4f} (best {r.best_val_loss:.4f}){ppl}")
    if run.report:
        say(run.report)
    for name, value in run.metrics.items():
        say(f"  {name:<16} {value:.4f}" if isinstance(value, float) else f"  {name:<16} {value}")
    say(f"  model directory  {run.out_dir}")
    if run.plot:
        say(f"  loss curve       {run.plot}")
    return run


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="CONFIG.toml (see docs/config.md)")
    p.add_argument("--preset", help="start from a preset: tiny, shakespeare-char, gpt2-small")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set train.lr=3e-4 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="discard an earlier run's checkpoints")


def run(args: argparse.Namespace) -> int:
    """Train; the exit code is 128 + N when signal N stopped the run (it saved a checkpoint)."""
    return train(args.config, args.overrides, args.preset, args.resume, args.overwrite).result.exit_code


COMMANDS = [Command("train", "train a model from a TOML config", add_arguments, run)]
