"""``lmforge quickstart``: train a small GPT on real text, evaluate it and print samples
(:func:`lmforge.tasks.quickstart.quickstart`)."""

from __future__ import annotations

import argparse

from ..tasks.quickstart import quickstart
from .output import say
from .arguments import positive_int
from .registry import Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="your own text (file, directory or JSONL) instead of the default")
    p.add_argument("--out", default="runs/quickstart", help="model directory to write")
    p.add_argument("--steps", type=positive_int, help="optimiser steps (default 1000)")
    p.add_argument("--prompt", help="prompt for the samples")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--overwrite", action="store_true",
                   help="discard an earlier quickstart run's checkpoints in --out")


def run(args: argparse.Namespace) -> int:
    """The exit code is 128 + N when signal N stopped training (a checkpoint was saved)."""
    return quickstart(data=args.data, out_dir=args.out, steps=args.steps, prompt=args.prompt,
                      overrides=args.overrides, say=say,
                      overwrite=args.overwrite)["result"].exit_code


COMMANDS = [Command("quickstart", "train a small GPT on real text, evaluate, sample (minutes)",
                    add_arguments, run)]
