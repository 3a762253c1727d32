"""The CPU heap during training (``train.host_memory``).

glibc's allocator serves a block above its *mmap threshold* with a fresh mapping that goes
back to the system when freed; smaller blocks come from the heap, whose freed space stays with
the process. The threshold starts at 128 KiB and rises to the size of every mapped block that
is freed (up to 32 MiB), so after a training step's first activations are freed, the next
ones of that size come from the heap, and the heap keeps growing: a QLoRA run of SmolLM2-135M
with activation checkpointing holds about 72 MiB of saved tensors after its forward pass, yet
its resident memory grows by 700 MiB (bench/train_memory.py; docs/training.md).

``compact`` fixes the threshold (256 KiB), which also stops it rising: every block above it is
mapped and unmapped, so the resident memory follows the live tensors. The price is a page
fault per page of every such block each time it is allocated, small next to a large model's
matrix products and large for a small model with many mid-sized temporaries (measured in
docs/training.md). Only glibc has the setting; elsewhere, or when the environment already
sets ``MALLOC_MMAP_THRESHOLD_``, nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
COMPACT_THRESHOLD = 256 << 10
"""Bytes above which ``compact`` maps every block (glibc's fixed mmap threshold)."""


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None


def set_host_memory(mode: str, threshold: int = COMPACT_THRESHOLD) -> bool:
    """Apply ``train.host_memory``: ``default`` leaves the allocator alone; ``compact`` fixes
    glibc's mmap threshold at ``threshold`` bytes for the rest of the process. Returns whether
    the allocator was changed (False on other C libraries, or when ``MALLOC_MMAP_THRESHOLD_``
    is set: the user's own setting wins)."""
    if mode != "compact" or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    libc = _glibc()
    return bool(libc is not None and libc.mallopt(M_MMAP_THRESHOLD, int(threshold)))
