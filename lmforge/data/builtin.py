"""A real corpus that exists on every machine with Python: the standard library's own source.

``lmforge quickstart`` trains on it when the user gives no data, so it works offline.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import DataError


def stdlib_dir() -> Path:
    """The directory holding the standard library's top-level modules (that of ``os.py``)."""
    return Path(os.__file__).resolve().parent


def _is_clean_utf8(path: Path) -> bool:
    try:
        data = path.read_bytes()
        data.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return b"\0" not in data and bool(data.strip())


def stdlib_corpus_files(max_bytes: int = 2_500_000) -> list[Path]:
    """Top-level ``*.py`` files of the standard library, sorted by name, up to ``max_bytes`` in all.

    Files are taken in name order while the running total stays within ``max_bytes`` (at least
    one file is always taken). Files that are not clean UTF-8 text are skipped.
    """
    if max_bytes <= 0:
        raise DataError(f"max_bytes must be positive, got {max_bytes}")
    root = stdlib_dir()
    candidates = sorted((p for p in root.glob("*.py") if p.is_file()), key=lambda p: p.name)
    files: list[Path] = []
    total = 0
    for p in candidates:
        size = p.stat().st_size
        if files and total + size > max_bytes:
            break
        if not _is_clean_utf8(p):
            continue
        files.append(p)
        total += size
    if not files:
        raise DataError(
            f"no Python standard library source files found in {str(root)!r} (this Python may ship "
            f"its library zipped or without sources); pass your own text files instead"
        )
    return files


def describe_stdlib_corpus(files: list[Path]) -> str:
    """A one-line description, e.g. ``Python 3.11 standard library source (210 files, 2.5 MB)``."""
    total = sum(p.stat().st_size for p in files)
    major, minor = sys.version_info[:2]
    return (
        f"Python {major}.{minor} standard library source "
        f"({len(files)} files, {total / 1e6:.1f} MB)"
    )
