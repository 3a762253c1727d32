"""``lmforge average``: the weight average of model directories of one architecture (checkpoint
averaging, model soups; :func:`lmforge.training.average.average_model_dirs`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..training.average import average_model_dirs
from .output import say
from .registry import Command


def average(model_dirs: list[str], out: str, weights: list[float] | None = None) -> Path:
    """Write the weight average of ``model_dirs`` to ``out`` (lmforge.training.average)."""
    path = average_model_dirs(model_dirs, out, weights)
    say(f"averaged {len(model_dirs)} models -> {path}")
    return path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dirs", nargs="+",
                   help="two or more model directories of one architecture")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--weights", type=float, nargs="+",
                   help="one weight per directory (default equal)")


def run(args: argparse.Namespace) -> None:
    average(args.model_dirs, args.out, args.weights)


COMMANDS = [Command("average", "average the weights of model directories (checkpoint "
                    "averaging, model soups) into a new one", add_arguments, run)]
