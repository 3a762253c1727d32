"""An exclusive lock on an output directory, held while one lmforge command writes there.

The lock is ``fcntl.flock`` on a file beside the directory, ``PARENT/.NAME.lmforge.lock``
(beside rather than inside, so a new model directory can still be written into a temporary
directory and renamed into place whole), holding the holder's pid. A second command gets
"OUT is in use by pid N". The operating system releases the lock when the holder dies; the
file is removed on a normal release (a stale one is harmless: whoever opens it next locks it).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import ConfigError

LOCK_SUFFIX = ".lmforge.lock"


def lock_path(out: str | Path) -> Path:
    """The lock file of output directory ``out``."""
    p = Path(os.path.abspath(Path(out).expanduser()))
    return p.parent / f".{p.name}{LOCK_SUFFIX}"


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return text if text.isdigit() else "?"


def _acquire(out: str | Path) -> int:
    """Open and lock ``out``'s lock file; returns its descriptor (locked, pid written)."""
    path = lock_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder(fd)
            os.close(fd)
            raise ConfigError(f"{out} is in use by pid {pid} (another lmforge command is "
                              "writing there); wait for it or choose another directory") from None
        try:  # the holder before us may have removed the file between our open and our lock
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return fd


def _release(out: str | Path, fd: int) -> None:
    with contextlib.suppress(OSError):
        os.unlink(lock_path(out))
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


@contextlib.contextmanager
def lock_output(out: str | Path, enabled: bool = True) -> Iterator[None]:
    """Hold the exclusive lock on output directory ``out`` for the body (``enabled=False``:
    do nothing, for the non-main processes of a distributed run). A command that fails before
    writing anything leaves no empty ``out`` behind it (one it did not find there)."""
    if not enabled:
        yield
        return
    existed = Path(out).exists()
    fd = _acquire(out)
    try:
        yield
    except BaseException:
        if not existed:
            with contextlib.suppress(OSError):
                Path(out).rmdir()  # only if empty: never removes anything written
        raise
    finally:
        _release(out, fd)
