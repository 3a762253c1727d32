"""What the commands print: lines for a person on stdout (flushed at once, so progress shows
through pipes), aligned ``label  value`` reports, and the ``--json`` copy of a result."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Mapping

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
        Path(path).write_text(json.dumps(obj, indent=2, default=str), encoding="utf-8")
