"""train.host_memory: ``compact`` fixes glibc's mmap threshold, so a freed large block does not
raise it and the next mid-sized block is mapped (returned to the system when freed) instead of
taken from the heap. Each check runs in its own process: the setting is process-wide."""

import ctypes.util
import subprocess
import sys
import textwrap

import pytest

from lmforge.training.host_memory import set_host_memory

GLIBC = sys.platform.startswith("linux") and "libc.so" in (ctypes.util.find_library("c") or "")

# How many bytes a 1 MiB allocation adds to glibc's mapped blocks (mallinfo2().hblkhd), after
# an 8 MiB mapped block was freed (which raises glibc's default threshold to 8 MiB).
PROBE = textwrap.dedent("""
    import ctypes, sys, torch
    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks "
                    "keepcost".split()]
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    {setup}
    big = torch.empty(8 << 20, dtype=torch.uint8)
    del big
    before = libc.mallinfo2().hblkhd
    block = torch.ones(1 << 20, dtype=torch.uint8)
    print("MAPPED", libc.mallinfo2().hblkhd - before)
""")

TRAINER = """
from lmforge.models import build_model
from lmforge.models.config import ModelConfig
from lmforge.objectives import causal_lm_loss
from lmforge.training.config import TrainConfig
from lmforge.training.trainer import Trainer
model = build_model(ModelConfig(vocab_size=32, d_model=16, n_layer=1, n_head=2, context_length=8))
Trainer(model, causal_lm_loss, lambda *a: None,
        TrainConfig(host_memory="{mode}", device="cpu", progress=False), sys.argv[1])
"""


def _mapped(setup: str, tmp_path, env=None) -> int:
    res = subprocess.run([sys.executable, "-c", PROBE.format(setup=setup.strip()), str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return int(res.stdout.split("MAPPED")[1])


@pytest.mark.skipif(not GLIBC, reason="train.host_memory acts on glibc's allocator only")
def test_compact_maps_mid_sized_blocks_after_a_large_one_was_freed(tmp_path):
    assert _mapped("", tmp_path) == 0  # glibc's default: the threshold rose, the heap serves it
    setup = "from lmforge.training.host_memory import set_host_memory\n" \
            "assert set_host_memory('compact')"
    assert _mapped(setup, tmp_path) >= 1 << 20


@pytest.mark.skipif(not GLIBC, reason="train.host_memory acts on glibc's allocator only")
@pytest.mark.parametrize("mode", ["default", "compact"])
def test_the_trainer_applies_the_setting(mode, tmp_path):
    mapped = _mapped(TRAINER.format(mode=mode), tmp_path)
    assert (mapped >= 1 << 20) == (mode == "compact")


def test_default_and_the_users_environment_leave_the_allocator_alone(monkeypatch):
    assert set_host_memory("default") is False
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert set_host_memory("compact") is False
