"""Save and load tokenizers as ``tokenizer.json`` (the Hugging Face ``tokenizers`` format)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from tokenizers import Tokenizer

from ..files.atomic import atomic_write_text
from ..errors import TokenizerError

PathLike = Union[str, "os.PathLike[str]"]
TOKENIZER_FILE = "tokenizer.json"


def _resolve(path: PathLike) -> Path:
    """A ``.json`` path is the file itself; anything else is a directory holding ``tokenizer.json``."""
    p = Path(os.path.expanduser(os.fspath(path)))
    if p.is_dir() or p.suffix.lower() != ".json":
        return p / TOKENIZER_FILE
    return p


def save_tokenizer(tok: Tokenizer, path: PathLike) -> Path:
    """Write ``tok`` to ``path`` (a ``.json`` file, or a directory that gets ``tokenizer.json``).

    The write is atomic: a temporary file in the same directory is written, fsynced and then
    renamed over the target, so a crash never leaves a half-written tokenizer. Returns the file.
    """
    target = _resolve(path)
    try:
        atomic_write_text(target, tok.to_str(pretty=True))
    except OSError as e:
        raise TokenizerError(
            f"cannot write tokenizer to {str(target)!r} ({e.strerror or e}); choose a writable path"
        ) from None
    return target


def load_tokenizer(path: PathLike) -> Tokenizer:
    """Load a tokenizer from a ``tokenizer.json`` file or a directory containing one."""
    p = Path(os.path.expanduser(os.fspath(path)))
    file = p / TOKENIZER_FILE if p.is_dir() else p
    if not file.is_file():
        where = f"directory {str(p)!r} has no {TOKENIZER_FILE}" if p.is_dir() else f"{str(file)!r} does not exist"
        raise TokenizerError(
            f"no tokenizer found: {where}; train one first, or give the path of an existing "
            f"{TOKENIZER_FILE} (or of the directory holding it)"
        )
    try:
        text = file.read_text(encoding="utf-8")
        return Tokenizer.from_str(text)
    except (OSError, UnicodeDecodeError) as e:
        raise TokenizerError(f"cannot read tokenizer file {str(file)!r} ({e}); check the file") from None
    except Exception as e:  # the Rust parser raises plain Exception
        first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TokenizerError(
            f"{str(file)!r} is not a valid tokenizer.json ({first_line}); re-train the tokenizer "
            f"or replace the file with one saved by lmforge or Hugging Face tokenizers"
        ) from None
