"""Reading safetensors files one tensor at a time, with the header and every offset checked
against the file's size before anything is allocated."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..errors import CheckpointError


def read_safetensors(f: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file (memory-mapped), a bad file a CheckpointError."""
    f = Path(f)
    if not f.is_file():
        raise CheckpointError(f"{f} is missing; the model directory is incomplete")
    try:
        return load_file(str(f))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{f} is corrupt or truncated ({e}); re-export or retrain the model") from None


_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
              "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
              "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


def stream_tensors(path: str | Path):
    """(header, read(name) -> tensor, the open file) for a safetensors file, read with ordinary
    file I/O one tensor at a time (a memory-mapped file's touched pages would count as
    resident); sizes and offsets are checked, a bad file is a CheckpointError."""
    f = Path(path)
    fh = open(f, "rb")
    bad = f"{f} is corrupt or truncated; re-export or retrain the model"
    try:
        n = int.from_bytes(fh.read(8), "little")
        header = {k: v for k, v in json.loads(fh.read(n)).items() if k != "__metadata__"}
    except (OSError, ValueError) as e:
        fh.close()
        raise CheckpointError(f"{bad} ({e})") from None
    base, size = 8 + n, f.stat().st_size

    def read(name: str) -> torch.Tensor:
        info = header[name]
        kind, shape = _ST_DTYPES[info["dtype"]], info["shape"]
        start, end = info["data_offsets"]
        numel = math.prod(shape)
        if end - start != numel * kind.itemsize or base + end > size:
            raise CheckpointError(f"{bad} (tensor {name})")
        fh.seek(base + start)
        buf = bytearray(end - start)
        if fh.readinto(buf) != len(buf):
            raise CheckpointError(f"{bad} (tensor {name})")
        t = torch.frombuffer(buf, dtype=kind) if numel else torch.empty(0, dtype=kind)
        return t.reshape(shape)

    return header, read, fh
