"""Reading safetensors files, with the header and every offset checked against the file's
size before anything is allocated.

A safetensors file is an 8-byte little-endian header length ``n``, ``n`` bytes of JSON (an
object of ``name -> {"dtype", "shape", "data_offsets"}`` plus an optional ``__metadata__``
object) and the data area. :func:`read_header` checks all of it: ``n`` fits the file and
:data:`MAX_HEADER_BYTES`, each entry has a known dtype, a shape of non-negative integers and
offsets inside the data area whose length is dtype size times element count, and no two
tensors overlap. Every problem is one :class:`~lmforge.errors.CheckpointError` naming the file.
"""

from __future__ import annotations

import errno
import json
import math
from pathlib import Path
from typing import BinaryIO

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError

MAX_HEADER_BYTES = 32 * 2**20
"""Largest header accepted (a header lists ~100 bytes per tensor: room for 300,000 tensors)."""
MAX_RANK = 16
"""Most dimensions a tensor may have."""

_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
              "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
              "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
for _name, _attr in (("U16", "uint16"), ("U32", "uint32"), ("U64", "uint64"),
                     ("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2")):
    if hasattr(torch, _attr):  # (newer torch versions)
        _ST_DTYPES[_name] = getattr(torch, _attr)


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"the key {dup!r} appears twice")
    return dict(pairs)


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _entry_problem(name: str, info: object, data_size: int) -> str | None:
    """What is wrong with the header entry of tensor ``name``, or None."""
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        return f"tensor {name!r}: expected an object with dtype, shape and data_offsets"
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in _ST_DTYPES:
        return f"tensor {name!r}: unknown dtype {str(dtype)[:20]!r}"
    if not isinstance(shape, list) or len(shape) > MAX_RANK \
            or not all(_is_int(d) and d >= 0 for d in shape):
        return f"tensor {name!r}: the shape must be a list of at most {MAX_RANK} integers >= 0"
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_int, offsets))
            and 0 <= offsets[0] <= offsets[1] <= data_size):
        return f"tensor {name!r}: data_offsets must be [start, end] inside the data area " \
               f"({data_size} bytes)"
    if offsets[1] - offsets[0] != math.prod(shape) * _ST_DTYPES[dtype].itemsize:
        return f"tensor {name!r}: {offsets[1] - offsets[0]} bytes do not hold a {dtype} " \
               f"tensor of shape {shape}"
    return None


def read_header(fh: BinaryIO, f: Path) -> tuple[dict[str, dict], int]:
    """The checked tensor entries of the open safetensors file ``fh`` (named ``f`` in
    errors; ``__metadata__`` left out) and the offset of its data area."""
    bad = f"{f} is corrupt or truncated (not a valid safetensors file)"
    fix = "re-export or retrain the model"
    size = fh.seek(0, 2)
    fh.seek(0)
    if size < 8:
        raise CheckpointError(f"{bad}: {size} bytes, shorter than the 8-byte header length; {fix}")
    n = int.from_bytes(fh.read(8), "little")
    if n > size - 8 or n > MAX_HEADER_BYTES:
        raise CheckpointError(f"{bad}: the header claims {n} bytes, the file has {size - 8} "
                              f"after the length (at most {MAX_HEADER_BYTES} allowed); {fix}")
    try:
        header = json.loads(fh.read(n).decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as e:  # (UnicodeDecodeError, JSONDecodeError)
        raise CheckpointError(f"{bad}: the header is not JSON ({str(e)[:120]}); {fix}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{bad}: the header is a JSON {type(header).__name__}, "
                              f"not an object; {fix}")
    if not isinstance(header.pop("__metadata__", {}), dict):
        raise CheckpointError(f"{bad}: __metadata__ is not an object; {fix}")
    base = 8 + n
    for name, info in header.items():
        if (problem := _entry_problem(name, info, size - base)) is not None:
            raise CheckpointError(f"{bad}: {problem}; {fix}")
    spans = sorted((i["data_offsets"][0], i["data_offsets"][1], k) for k, i in header.items())
    for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
        if start < end:
            raise CheckpointError(f"{bad}: tensors {a!r} and {b!r} overlap; {fix}")
    return header, base


def _checked_header(f: Path) -> dict[str, dict]:
    if not f.is_file():
        raise CheckpointError(f"{f} is missing; the model directory is incomplete")
    try:
        with open(f, "rb") as fh:
            return read_header(fh, f)[0]
    except OSError as e:
        raise CheckpointError(f"{f} cannot be read ({e.strerror or e})") from None


def read_safetensors(f: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file (memory-mapped), a bad file a CheckpointError."""
    f = Path(f)
    header = _checked_header(f)
    try:
        tensors = load_file(str(f))
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"{f} is corrupt or truncated ({e}); re-export or retrain the model") from None
    if tensors.keys() != header.keys():  # (cannot happen with a checked header; cheap to say)
        raise CheckpointError(f"{f} is corrupt: its tensors differ from its header")
    return tensors


def stream_tensors(path: str | Path):
    """(header, read(name) -> tensor, the open file) for a safetensors file, read with ordinary
    file I/O one tensor at a time (a memory-mapped file's touched pages would count as
    resident); the header is checked first (:func:`read_header`), a bad file is a
    CheckpointError. ``read`` allocates only the bytes the header gives the tensor."""
    f = Path(path)
    try:
        fh = open(f, "rb")
    except OSError as e:
        raise CheckpointError(f"{f} cannot be read ({e.strerror or e}); the model directory "
                              "is incomplete") from None
    try:
        header, base = read_header(fh, f)
    except BaseException:
        fh.close()
        raise

    def read(name: str) -> torch.Tensor:
        info = header.get(name)
        if info is None:
            raise CheckpointError(f"{f} has no tensor {name!r}")
        kind, shape = _ST_DTYPES[info["dtype"]], info["shape"]
        start, end = info["data_offsets"]
        fh.seek(base + start)
        buf = bytearray(end - start)
        if fh.readinto(buf) != len(buf):
            raise CheckpointError(f"{f} is corrupt or truncated (tensor {name}); re-export or "
                                  "retrain the model")
        t = torch.frombuffer(buf, dtype=kind) if buf else torch.empty(0, dtype=kind)
        return t.reshape(shape)

    return header, read, fh


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """Write ``tensors`` to ``path`` (safetensors, format "pt"). A failed write (a full disk,
    a file-size limit) is an OSError naming the file, as any other failed write is, rather
    than the library's SafetensorError."""
    try:
        save_file(tensors, str(path), metadata={"format": "pt"})
    except SafetensorError as e:
        raise OSError(errno.EIO, f"write failed, is the disk full? ({e})", str(path)) from None
