"""Atomic file writes: write into a private temporary directory beside the target, fsync,
rename into place.

A reader (or a run killed half-way) sees either the old file or the complete new one, never a
truncated mix. What a killed run leaves behind is recognisable and removed by
:func:`sweep_stale_temporaries`:

* each write works in a directory ``.NAME.lmforge-tmp-PID-XXXXXXXX`` next to ``NAME`` (PID =
  the writing process), so a writer's own temporary files (safetensors writes a ``.tmpXXXXXX``
  next to its target and renames it) land inside it too;
* the finished file gets the permissions an ordinary ``open(path, "w")`` would give it
  (``0o666 & ~umask``), not the owner-only 0600 of ``mkstemp`` or safetensors' temporaries.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

TEMP_MARK = ".lmforge-tmp-"
"""Part of the name of every temporary directory :func:`atomic_write` makes."""

_OURS = re.compile(r"^\..+\.lmforge-tmp-(\d+)-[A-Za-z0-9_]+$")
# left by lmforge before the marked names: mkstemp's ``.NAME.XXXXXXXX.tmp`` and the
# ``.tmpXXXXXX`` files safetensors writes next to its target
_LEGACY = (re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$"), re.compile(r"^\.tmp[A-Za-z0-9]{6}$"))


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _create_with_umask(path: Path) -> int:
    """Create ``path`` empty, as ``open(path, "w")`` would (mode 0o666 & ~umask); returns
    that mode (read back, so the process umask is never changed, not even for a moment)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        return os.fstat(fd).st_mode & 0o777
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` to produce the file, then move it to ``path`` atomically.

    ``tmp_path`` has ``path``'s own name, inside a temporary directory beside it; it exists
    (empty) when ``write`` is called. On any error the temporary directory is removed; after
    a kill it is left for :func:`sweep_stale_temporaries`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{path.name}{TEMP_MARK}{os.getpid()}-",
                                 dir=path.parent))
    tmp = work / path.name
    try:
        mode = _create_with_umask(tmp)
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if os.stat(tmp).st_mode & 0o777 != mode:  # the writer replaced the file (safetensors)
            os.chmod(tmp, mode)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # this process's own writes may be in progress (another thread)
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True  # another user's process
    except (ProcessLookupError, OverflowError, ValueError):
        return False
    return True


def is_stale_temporary(entry: Path) -> bool:
    """Whether ``entry`` is a leftover of an interrupted atomic write: a marked temporary
    directory whose process is gone, or a temporary file of an older lmforge."""
    m = _OURS.match(entry.name)
    if m is not None:
        return not _pid_alive(int(m.group(1)))
    return any(p.match(entry.name) for p in _LEGACY) and entry.is_file()


def sweep_stale_temporaries(directory: str | Path) -> list[Path]:
    """Remove what interrupted atomic writes left in ``directory`` (not below it); returns
    the paths removed. Temporaries of live processes are left alone; a missing directory
    is nothing to sweep."""
    removed = []
    try:
        entries = list(Path(directory).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        if not is_stale_temporary(entry):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed
