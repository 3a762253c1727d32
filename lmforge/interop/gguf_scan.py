"""Bounded reading of a GGUF file: the header, the metadata and the tensor infos are parsed
here with ``struct`` and ``numpy`` (no ``gguf`` package needed), checking at every step that
each count and length, times the least number of bytes one item takes, fits in the bytes that
are left, and that every size is under a cap far above any real model. A hostile or broken file
ends in one :class:`~lmforge.errors.CheckpointError`,
``FILE: not a valid GGUF file: <what> at byte N``, before anything large is allocated.

Layout (GGUF v2/v3, little-endian; gguf_reader.py and llama.cpp's gguf.cpp)::

    "GGUF"  u32 version  u64 tensor_count  u64 kv_count
    kv_count x (string key, u32 value_type, value)
    tensor_count x (string name, u32 n_dims, n_dims x u64 dim, u32 ggml_type, u64 offset)
    padding to general.alignment (default 32), then the tensor data (offsets from there)

A string is a u64 byte length and UTF-8 bytes; an array a u32 element type, a u64 length and
the elements (arrays may nest). The tensors come back as zero-copy views of the memory-mapped
file (raw bytes, rows last), the layout ``gguf.quants.dequantize`` takes.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import CheckpointError

MAGIC = b"GGUF"
VERSIONS = (2, 3)
MAX_KEY = 1 << 16
"""Longest key or tensor name, in bytes (llama.cpp's tensor names are at most 64)."""
MAX_STRING = 64 << 20
MAX_KV = 1_000_000
MAX_TENSORS = 1_000_000
MAX_METADATA = 512 << 20
"""Bytes of metadata (keys and values) in all; a real file has a few MiB (the token list)."""
MAX_ITEMS = 1 << 22
"""Array elements in all the metadata together (Llama 3: 128k tokens, types and 280k merges)."""
MAX_DEPTH = 4
MAX_DIMS = 4
MAX_DIM = 1 << 40
DEFAULT_ALIGNMENT = 32
STRING, ARRAY = 8, 9
SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "B", 10: "Q", 11: "q",
           12: "d"}
"""GGUF value type -> struct code (little-endian; BOOL is a byte, true when not 0)."""
VALUE_TYPES = {0: "UINT8", 1: "INT8", 2: "UINT16", 3: "INT16", 4: "UINT32", 5: "INT32",
               6: "FLOAT32", 7: "BOOL", 8: "STRING", 9: "ARRAY", 10: "UINT64", 11: "INT64",
               12: "FLOAT64"}
GGML_TYPES = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24),
              8: (32, 34), 9: (32, 40), 10: (256, 84), 11: (256, 110), 12: (256, 144),
              13: (256, 176), 14: (256, 210), 15: (256, 292), 16: (256, 66), 17: (256, 74),
              18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82),
              23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8),
              29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66), 39: (32, 17)}
"""ggml tensor type -> (elements per block, bytes per block), as gguf's GGML_QUANT_SIZES."""
_MIN_SIZE = {**{t: struct.calcsize(c) for t, c in SCALARS.items()}, STRING: 8, ARRAY: 12}
"""Least number of bytes one value of each type takes in the file."""


class TensorInfo(NamedTuple):
    """One tensor of the file, with the attributes of ``gguf.ReaderTensor`` the import uses."""

    name: str
    tensor_type: int
    shape: tuple[int, ...]
    """GGUF order: the innermost (row) dimension first."""
    n_bytes: int
    data_offset: int
    data: np.ndarray
    """Raw bytes, shape (*reversed(shape)[:-1], bytes per row); a view of the mapped file."""


class GGUFFile(NamedTuple):
    version: int
    metadata: dict[str, Any]
    tensors: list[TensorInfo]
    alignment: int
    data_offset: int


class _Cursor:
    """A position in the mapped file that refuses to read past its end."""

    def __init__(self, buf: np.ndarray, path: Path):
        self.buf, self.path, self.pos, self.size = buf, path, 0, len(buf)
        self.items = MAX_ITEMS

    def error(self, what: str, at: int | None = None) -> CheckpointError:
        at = self.pos if at is None else at
        return CheckpointError(f"{self.path}: not a valid GGUF file: {what} at byte {at}")

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise self.error(f"{what} needs {n} bytes, only {self.size - self.pos} are left")

    def unpack(self, code: str, what: str) -> int:
        size = struct.calcsize(code)
        self.need(size, what)
        (value,) = struct.unpack_from(code, self.buf, self.pos)
        self.pos += size
        return value

    def string(self, what: str, cap: int = MAX_STRING) -> str:
        at = self.pos
        n = self.unpack("<Q", f"the length of {what}")
        if n > cap:
            raise self.error(f"{what} is {n} bytes long, more than the cap of {cap}", at)
        self.need(n, f"{what} ({n} bytes)")
        try:
            text = str(self.buf[self.pos:self.pos + n], "utf-8")
        except UnicodeDecodeError as e:
            raise self.error(f"{what} is not UTF-8 ({e.reason} at byte {e.start} of it)", at) from None
        self.pos += n
        return text


def _value(cur: _Cursor, kind: int, what: str, depth: int = 0) -> Any:
    if kind in SCALARS:
        value = cur.unpack("<" + SCALARS[kind], what)
        return bool(value) if kind == 7 else value
    if kind == STRING:
        return cur.string(what)
    if kind == ARRAY:
        return _array(cur, what, depth + 1)
    raise cur.error(f"{what} has the unknown value type {kind}", cur.pos - 4)


def _array(cur: _Cursor, what: str, depth: int) -> list:
    at = cur.pos
    kind = cur.unpack("<I", f"the element type of {what}")
    count = cur.unpack("<Q", f"the length of {what}")
    if depth > MAX_DEPTH:
        raise cur.error(f"{what} nests arrays more than {MAX_DEPTH} deep", at)
    if kind not in _MIN_SIZE:
        raise cur.error(f"{what} is an array of the unknown value type {kind}", at)
    if count > cur.items:
        raise cur.error(f"{what} claims {count} items; the metadata may hold {MAX_ITEMS} array "
                        "items in all", at)
    least, left = count * _MIN_SIZE[kind], cur.size - cur.pos
    if least > left:
        raise cur.error(f"{what} claims {count} items of type {VALUE_TYPES[kind]}, which need at "
                        f"least {least} bytes, but only {left} are left", at)
    cur.items -= count
    if kind in SCALARS:
        values = np.frombuffer(cur.buf, "<" + SCALARS[kind], count, cur.pos)
        cur.pos += least
        return (values != 0).tolist() if kind == 7 else values.tolist()
    return [_value(cur, kind, f"item {i} of {what}", depth) for i in range(count)]


def _metadata(cur: _Cursor, count: int) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    start = cur.pos
    for i in range(count):
        at = cur.pos
        key = cur.string(f"the key of metadata entry {i}", MAX_KEY)
        if not key:
            raise cur.error(f"metadata entry {i} has an empty key", at)
        if key in meta:
            raise cur.error(f"the metadata key {key!r} appears twice", at)
        kind = cur.unpack("<I", f"the value type of {key!r}")
        meta[key] = _value(cur, kind, f"the value of {key!r}")
        if cur.pos - start > MAX_METADATA:
            raise cur.error(f"the metadata is longer than the cap of {MAX_METADATA} bytes", at)
    return meta


def _tensor_info(cur: _Cursor, i: int, alignment: int) -> tuple[str, tuple[int, ...], int, int, int]:
    at = cur.pos
    name = cur.string(f"the name of tensor {i}", MAX_KEY)
    n_dims = cur.unpack("<I", f"the dimension count of tensor {name!r}")
    if not 1 <= n_dims <= MAX_DIMS:
        raise cur.error(f"tensor {name!r} has {n_dims} dimensions; allowed: 1 to {MAX_DIMS}", at)
    cur.need(8 * n_dims, f"the dimensions of tensor {name!r}")
    dims = struct.unpack_from(f"<{n_dims}Q", cur.buf, cur.pos)
    cur.pos += 8 * n_dims
    if not all(1 <= d <= MAX_DIM for d in dims):
        raise cur.error(f"tensor {name!r} has dimensions {list(dims)}; each must be from 1 to "
                        f"{MAX_DIM}", at)
    kind = cur.unpack("<I", f"the type of tensor {name!r}")
    if kind not in GGML_TYPES:
        raise cur.error(f"tensor {name!r} has the unknown ggml type {kind}", at)
    block, block_bytes = GGML_TYPES[kind]
    if dims[0] % block:
        raise cur.error(f"tensor {name!r}: its row of {dims[0]} values is not a whole number of "
                        f"blocks of {block}", at)
    offset = cur.unpack("<Q", f"the data offset of tensor {name!r}")
    if offset % alignment:
        raise cur.error(f"tensor {name!r}: its data offset {offset} is not a multiple of the "
                        f"alignment {alignment}", at)
    n_bytes = int(np.prod(dims, dtype=object)) // block * block_bytes
    return name, dims, kind, offset, n_bytes


def _alignment(cur: _Cursor, meta: dict[str, Any]) -> int:
    value = meta.get("general.alignment", DEFAULT_ALIGNMENT)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value & (value - 1) \
            or value > 1 << 30:
        raise cur.error(f"general.alignment {value!r} is not a power of two up to 2^30", 0)
    return value


def _tensors(cur: _Cursor, count: int, alignment: int) -> tuple[list[TensorInfo], int]:
    infos, names = [], set()
    for i in range(count):
        at = cur.pos
        info = _tensor_info(cur, i, alignment)
        if info[0] in names:
            raise cur.error(f"the tensor name {info[0]!r} appears twice", at)
        names.add(info[0])
        infos.append(info)
    start = -(-cur.pos // alignment) * alignment
    room, total, tensors = cur.size - start, 0, []
    for name, dims, kind, offset, n_bytes in infos:
        total += n_bytes
        if offset + n_bytes > room or total > room:
            raise cur.error(f"the data of tensor {name!r} ({n_bytes} bytes at offset {offset}) "
                            f"does not fit in the {max(room, 0)} bytes after the header", start)
        shape = tuple(reversed(dims))
        block, block_bytes = GGML_TYPES[kind]
        raw = cur.buf[start + offset:start + offset + n_bytes]
        data = raw.reshape(*shape[:-1], shape[-1] // block * block_bytes)
        tensors.append(TensorInfo(name, kind, dims, n_bytes, start + offset, data))
    return tensors, start


def scan_gguf(path: str | Path) -> GGUFFile:
    """Read and check a GGUF file's header, metadata and tensor infos (the tensor data stays
    mapped, unread). Raises CheckpointError on anything malformed or over a cap."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size < 24:
            raise CheckpointError(f"{path}: not a valid GGUF file: it is {size} bytes long, "
                                  "shorter than a GGUF header (24 bytes)")
        buf = np.memmap(path, dtype=np.uint8, mode="r")
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror or e})") from None
    cur = _Cursor(buf, path)
    if bytes(buf[:4]) != MAGIC:
        raise cur.error(f"the magic is {bytes(buf[:4])!r}, not {MAGIC!r}", 0)
    cur.pos = 4
    version = cur.unpack("<I", "the version")
    if version not in VERSIONS:
        swapped = struct.unpack(">I", struct.pack("<I", version))[0] in VERSIONS
        why = " (a big-endian file, which is not supported)" if swapped else ""
        raise cur.error(f"version {version} is not supported{why}; supported: 2, 3", 4)
    n_tensors = cur.unpack("<Q", "the tensor count")
    n_kv = cur.unpack("<Q", "the metadata count")
    left = size - cur.pos
    if n_kv > MAX_KV or n_kv * 14 > left:
        raise cur.error(f"the metadata count {n_kv} is over the cap of {MAX_KV} or more than "
                        f"{left} bytes can hold", 16)
    if n_tensors > MAX_TENSORS or n_tensors * 32 > left:
        raise cur.error(f"the tensor count {n_tensors} is over the cap of {MAX_TENSORS} or more "
                        f"than {left} bytes can hold", 8)
    meta = _metadata(cur, n_kv)
    alignment = _alignment(cur, meta)
    tensors, start = _tensors(cur, n_tensors, alignment)
    return GGUFFile(version, meta, tensors, alignment, start)
