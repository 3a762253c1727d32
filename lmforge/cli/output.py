"""What the commands print: lines for a person on stdout (flushed at once, so progress shows
through pipes), aligned ``label  value`` reports, and the ``--json`` copy of a result."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Mapping

from ..files.atomic import atomic_write_text
from ..files.guard import check_not_input

INPUT_ARGS = ("model_dir", "model_dirs", "src", "data", "files", "ref", "config", "adapter")
"""The arguments commands read from."""
OUTPUT_ARGS = ("out", "json", "plot", "plot_attention")
"""The arguments commands write to."""

LABEL_WIDTH = 18  # "  perplexity        3.142": values line up under each other


def say(*parts: Any) -> None:
    """Print a line to stdout and flush it."""
    print(*parts, flush=True)


def warn(*parts: Any) -> None:
    """Print a line to stderr (notices that are not the command's output)."""
    print(*parts, file=sys.stderr, flush=True)


def say_fields(fields: Mapping[str, Any], indent: str = "  ", width: int = LABEL_WIDTH) -> None:
    """Print one ``label  value`` line per item, the values aligned in a column."""
    for label, value in fields.items():
        say(f"{indent}{label:<{width}}{value}")


def write_json(obj: Any, path: str | Path | None) -> None:
    """Write ``obj`` as indented JSON to ``path`` when one is given (``--json FILE``); values
    JSON cannot hold (paths, ...) are written as their text."""
    if path:
        atomic_write_text(Path(path), json.dumps(obj, indent=2, default=str))


def guard_outputs(args: argparse.Namespace) -> None:
    """Refuse, before a command runs, any output argument (``--out``, ``--json``, ``--plot``)
    equal to or inside one of its inputs (``--data X --json X`` would destroy the data)."""
    inputs: list = []
    for name in INPUT_ARGS:
        value = getattr(args, name, None)
        inputs += value if isinstance(value, list) else [value]
    for name in OUTPUT_ARGS:
        if isinstance(getattr(args, name, None), str):
            check_not_input(getattr(args, name), inputs, "--" + name.replace("_", "-"))
