"""The output guard every writer calls before it writes: never write over an input, never
replace existing work without being told to.

:func:`check_output` refuses (one :class:`~lmforge.errors.ConfigError` naming the path and
the fix):

* an output equal to, inside, or containing one of the command's inputs: even with
  ``overwrite`` (writing there would destroy what is being read);
* an output that is a file where a directory is expected (or a directory where a file is);
* an existing file, or a directory that is not empty, unless ``overwrite``.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from ..errors import ConfigError
from .atomic import TEMP_MARK

IGNORED = (".lmforge.lock",)
"""Entries that do not make a directory "not empty" (a lock file an earlier lmforge left)."""


def _resolved(p: str | Path) -> Path:
    return Path(os.path.abspath(Path(p).expanduser())).resolve(strict=False)


def _inside(a: Path, b: Path) -> bool:
    """Whether ``a`` is ``b`` or lies below it."""
    return a == b or b in a.parents


def check_not_input(out: str | Path, inputs: Iterable[str | Path | None] = (),
                    what: str = "--out", both_ways: bool = True) -> None:
    """Refuse ``out`` equal to or inside any of ``inputs`` (and, with ``both_ways``, an input
    inside ``out``). Empty or None inputs are skipped."""
    o = _resolved(out)
    for raw in inputs:
        if not raw:
            continue
        i = _resolved(raw)
        if o == i:
            where = "is"
        elif _inside(o, i):
            where = "is inside"
        elif both_ways and _inside(i, o):
            where = "contains"
        else:
            continue
        raise ConfigError(f"{what} {out} {where} the input {raw}; writing there would destroy "
                          "it: choose an output outside the inputs")


def is_empty_dir(path: Path) -> bool:
    return path.is_dir() and all(e.name in IGNORED for e in path.iterdir())


def check_output(out: str | Path, inputs: Iterable[str | Path | None] = (),
                 overwrite: bool = False, what: str = "--out", kind: str = "directory") -> Path:
    """Check that ``out`` may be written (see the module's docstring); returns it as a Path.
    ``kind`` is what the writer makes there: ``"directory"`` or ``"file"``."""
    check_not_input(out, inputs, what)
    path = Path(out)
    if kind == "directory":
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{what} {out} is an existing file, not a directory; choose a "
                              "directory path (or remove the file)")
        if path.is_dir() and not is_empty_dir(path) and not overwrite:
            raise ConfigError(f"{what} {out} is a directory that is not empty; pass --overwrite "
                              "to write over it, or choose a new directory")
    else:
        if path.is_dir():
            raise ConfigError(f"{what} {out} is a directory; give a file path "
                              f"(for example {path / 'tokenizer.json'})")
        if path.exists() and not overwrite:
            raise ConfigError(f"{what} {out} already exists; pass --overwrite to replace it, "
                              "or choose another file")
    return path


def sibling_temporary(path: Path) -> Path:
    """A fresh name beside ``path`` (not created) that :func:`~lmforge.files.atomic.
    sweep_stale_temporaries` recognises as a leftover once this process is gone."""
    return path.parent / f".{path.name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"


def replace_directory(out: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` to build a directory at a fresh sibling path, then move it to
    ``out`` whole: an existing ``out`` (already allowed by :func:`check_output`) is replaced
    only once the new one is complete, and removed entirely (no old files left beside new
    ones). On an error nothing at ``out`` has changed."""
    given, out = Path(out), Path(os.path.abspath(Path(out).expanduser()))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = sibling_temporary(out), None
    try:
        try:
            write(tmp)
        except OSError as e:  # name the output the user gave, not the temporary directory
            if e.filename and str(e.filename).startswith(str(tmp)):
                e.filename = str(given)
            raise
        if out.exists():
            old = sibling_temporary(out)
            os.rename(out, old)
            try:
                os.rename(tmp, out)
            except OSError:
                os.rename(old, out)  # put the old directory back
                old = None
                raise
        else:
            os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return given
