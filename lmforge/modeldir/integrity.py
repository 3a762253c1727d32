"""Integrity of a model directory's weights: the sha256 of ``model.safetensors`` recorded in
meta.json (``files``) when the directory is written and checked when it is loaded, and weights
holding NaN or infinity refused.

Hashing streams the file in 8 MiB blocks (hashlib's sha256 runs at about 1.4 GB/s on one core:
a 540 MB checkpoint such as SmolLM2-135M in float32 costs about 0.4 s, the file in the page
cache after being read; the finiteness screen adds about 0.03 s). A directory written before the record
existed (no ``files`` in meta.json) loads unchecked; ``lmforge info --verify`` says so.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch

from ..errors import CheckpointError
from .meta import ModelMeta, as_meta

HASH_BLOCK = 8 * 2**20
_HEX64 = re.compile(r"[0-9a-f]{64}")


def sha256_file(f: Path) -> str:
    """The hex sha256 of the file ``f``, read in blocks (constant memory)."""
    h = hashlib.sha256()
    buf = bytearray(HASH_BLOCK)
    view = memoryview(buf)
    with open(f, "rb") as fh:
        while n := fh.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def with_sha256(path: str | Path, meta: ModelMeta | dict | None, name: str = "model.safetensors",
                where: str = "meta") -> ModelMeta:
    """``meta`` (a ModelMeta, or a meta.json's contents) with the sha256 of ``path/name``
    recorded in its ``files`` (the other files' records kept)."""
    meta = as_meta(meta, where)
    f = Path(path) / name
    if not f.is_file():
        return meta
    return meta.with_fields(files={**(meta.files or {}), name: sha256_file(f)})


def verify_sha256(path: str | Path, meta: ModelMeta, name: str = "model.safetensors") -> bool:
    """Check ``path/name`` against the sha256 ``meta`` records for it: True when it matches,
    False when none is recorded; a mismatch (or a malformed record) raises CheckpointError."""
    want = (meta.files or {}).get(name)
    if want is None:
        return False
    f = Path(path) / name
    if not isinstance(want, str) or not _HEX64.fullmatch(want):
        raise CheckpointError(f"{Path(path) / 'meta.json'}: files.{name} must be a sha256 as 64 "
                              f"lowercase hex digits, got {str(want)[:70]!r}; correct or remove it")
    if not f.is_file():
        raise CheckpointError(f"{f} is missing; the model directory is incomplete")
    if sha256_file(f) != want:
        raise CheckpointError(f"{f} does not match the sha256 recorded in meta.json (corrupt or "
                              "truncated, or replaced); re-export or retrain the model")
    return True


def check_finite(tensors: dict[str, torch.Tensor], where: str | Path) -> None:
    """Refuse floating-point weights holding NaN or infinity, naming the first such tensor.
    A tensor's sum screens it (NaN or infinity anywhere makes the sum so; 135 M float32 weights
    take about 0.03 s, an element-wise test 30 times that); only a non-finite sum, which finite
    but huge weights can also give, is checked element by element."""
    for name, t in tensors.items():
        if not t.is_floating_point() or not t.numel():
            continue
        total = t.sum(dtype=torch.float64 if t.dtype == torch.float64 else torch.float32)
        if not bool(torch.isfinite(total)) and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(f"{where}: tensor {name!r} holds {bad} NaN or infinite "
                                  "value(s); the weights are corrupt: re-export or retrain the "
                                  "model")
