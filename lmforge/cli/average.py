"""``lmforge average``: the weight average of model directories of one architecture (checkpoint
averaging, model soups; :func:`lmforge.modeldir.average.average_model_dirs`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..files.guard import check_output, replace_directory
from ..files.lock import lock_output
from ..modeldir.average import average_model_dirs
from .arguments import non_negative_float
from .output import say
from .registry import Command


def average(model_dirs: list[str], out: str, weights: list[float] | None = None,
            overwrite: bool = False) -> Path:
    """Write the weight average of ``model_dirs`` to ``out`` (lmforge.modeldir.average):
    never one of the inputs, a non-empty directory only with ``overwrite`` (replaced whole),
    locked while written."""
    check_output(out, model_dirs, overwrite)
    with lock_output(out):
        path = replace_directory(out, lambda tmp: average_model_dirs(model_dirs, tmp, weights))
    say(f"averaged {len(model_dirs)} models -> {path}")
    return path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dirs", nargs="+",
                   help="two or more model directories of one architecture")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--weights", type=non_negative_float, nargs="+",
                   help="one weight per directory (default equal)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out if it is not empty (its old contents are removed)")


def run(args: argparse.Namespace) -> None:
    average(args.model_dirs, args.out, args.weights, args.overwrite)


COMMANDS = [Command("average", "average the weights of model directories (checkpoint "
                    "averaging, model soups) into a new one", add_arguments, run)]
