"""Atomic writes: a killed write leaves the old file intact and a recognisable temporary that
the next run sweeps; finished files follow the umask, not mkstemp's 0600."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lmforge.files.atomic import TEMP_MARK, atomic_write, atomic_write_text, sweep_stale_temporaries

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def umask():
    """Set the process umask for a test (restored afterwards)."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002, 0o027])
@pytest.mark.parametrize("writer", ["text", "torch", "safetensors"])
def test_written_files_follow_the_umask(tmp_path, umask, mask, writer):
    umask(mask)
    target = tmp_path / f"out.{writer}"
    write = {"text": lambda p: p.write_text("x", encoding="utf-8"),
             "torch": lambda p: torch.save({"a": torch.zeros(2)}, p),
             "safetensors": lambda p: save_file({"a": torch.zeros(2)}, str(p))}[writer]
    atomic_write(target, write)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]  # no temporaries left


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    target = tmp_path / "ckpt.pt"
    atomic_write_text(target, "old")

    def half_then_fail(p: Path) -> None:
        p.write_text("new, half", encoding="utf-8")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write(target, half_then_fail)
    assert target.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


KILLED_WRITER = """
import os, signal, sys
from lmforge.files.atomic import atomic_write
def write(p):
    with open(p, "wb") as f:
        f.write(b"partial" * 1000)
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
atomic_write(sys.argv[1], write)
"""


def test_a_kill_during_a_write_leaves_the_old_file_and_the_next_sweep_removes_the_rest(tmp_path):
    target = tmp_path / "step_0000010.pt"
    target.write_bytes(b"the old checkpoint")
    bystanders = {".hidden": b"h", "notes.tmp": b"n", "step_0000005.pt": b"5"}
    for name, data in bystanders.items():
        (tmp_path / name).write_bytes(data)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)],
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.wait(timeout=120) == -signal.SIGKILL
    assert target.read_bytes() == b"the old checkpoint"
    left = [p for p in tmp_path.iterdir() if TEMP_MARK in p.name]
    assert len(left) == 1 and left[0].name.startswith(f".{target.name}{TEMP_MARK}{proc.pid}-")
    assert (left[0] / target.name).stat().st_size == 7000  # the partial write, recognisable

    removed = sweep_stale_temporaries(tmp_path)
    assert removed == left and not left[0].exists()
    assert target.read_bytes() == b"the old checkpoint"
    for name, data in bystanders.items():  # only temporaries are touched
        assert (tmp_path / name).read_bytes() == data


def test_sweep_leaves_temporaries_of_live_processes_and_removes_legacy_ones(tmp_path):
    live = tmp_path / f".model.safetensors{TEMP_MARK}{os.getppid()}-abcd1234"
    mine = tmp_path / f".model.safetensors{TEMP_MARK}{os.getpid()}-abcd1234"
    for d in (live, mine):
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"in progress")
    legacy = [tmp_path / ".step_0000010.pt.k2j_9x0a.tmp", tmp_path / ".tmpA1b2C3"]
    for p in legacy:
        p.write_bytes(b"left by an older lmforge")
    (tmp_path / ".tmpdir_not_a_file").mkdir()
    assert sorted(sweep_stale_temporaries(tmp_path)) == sorted(legacy)
    assert live.is_dir() and mine.is_dir() and (tmp_path / ".tmpdir_not_a_file").is_dir()
    assert sweep_stale_temporaries(tmp_path / "missing") == []
