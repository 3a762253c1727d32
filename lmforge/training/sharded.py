"""Sharded (distributed) checkpoints with ``torch.distributed.checkpoint`` (DCP), for FSDP.

Each process writes its own shards of the model and optimiser into one directory
``checkpoints/step_NNNNNNN.dcp/``; DCP reshards on load, so a checkpoint written by N processes
resumes on M (1 included, without ``torchrun``). Beside the shards, ``trainer.pt`` holds the
plain training state (step, token count, RNG, loss scaler), written by rank 0 and loaded with
``weights_only=True``.

DCP stores its index (``.metadata``) with pickle. It is read here by :class:`SafeReader`, whose
unpickler knows only the handful of plain record classes DCP's index is made of, so a planted
file is refused, never executed.
"""

from __future__ import annotations

import io
import pickle
import re
import shutil
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.filesystem import FileSystemReader
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_state_dict, set_state_dict)

from ..errors import CheckpointError
from .checkpoint import load_checkpoint, save_checkpoint

_NAME = re.compile(r"^step_(\d{7,})\.dcp$")
_DCP = "torch.distributed.checkpoint."
_ALLOWED = {
    _DCP + "metadata": {"Metadata", "TensorStorageMetadata", "TensorProperties",
                        "ChunkStorageMetadata", "BytesStorageMetadata", "MetadataIndex",
                        "StorageMeta", "_MEM_FORMAT_ENCODING"},
    _DCP + "filesystem": {"_StorageInfo"},
    "torch.serialization": {"_get_layout"},
    "pathlib": {"PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath", "Path"},
    "collections": {"OrderedDict"},
}


class _IndexUnpickler(pickle.Unpickler):
    """Unpickles DCP's index: its record classes, torch.Size and dtypes, nothing else."""

    def find_class(self, module: str, name: str):
        if module == "torch" and (name == "Size" or isinstance(getattr(torch, name, None),
                                                                torch.dtype)):
            return getattr(torch, name)
        if name in _ALLOWED.get(module, ()):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing global {module}.{name}")


class SafeReader(FileSystemReader):
    """DCP's file-system reader, with the index read by :class:`_IndexUnpickler`."""

    def read_metadata(self, *args, **kwargs):
        path = Path(self.path) / ".metadata"
        try:
            metadata = _IndexUnpickler(io.BytesIO(path.read_bytes())).load()
        except FileNotFoundError:
            raise CheckpointError(f"sharded checkpoint {self.path} has no .metadata index; it "
                                  "is incomplete: delete it to resume from an earlier one") from None
        except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError) as e:
            raise CheckpointError(f"sharded checkpoint {self.path}: its index is not a plain DCP "
                                  f"index ({e}); refusing to load it") from None
        if getattr(metadata, "storage_meta", None) is not None:
            metadata.storage_meta.load_id = self.load_id
        return metadata


def list_sharded(directory: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of the sharded checkpoints in ``directory``, oldest first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in d.iterdir()
                  if (m := _NAME.match(p.name)) and (p / "trainer.pt").is_file())


def save_sharded(directory: str | Path, step: int, model: nn.Module,
                 optimizer: torch.optim.Optimizer, trainer_state: dict, *, is_main: bool,
                 barrier, keep: int = 2) -> Path:
    """Every rank writes its shards into ``step_NNNNNNN.dcp``; rank 0 adds ``trainer.pt`` last
    (a directory without it is incomplete and ignored) and removes old checkpoints."""
    path = Path(directory) / f"step_{step:07d}.dcp"
    if is_main:
        shutil.rmtree(path, ignore_errors=True)  # an interrupted earlier write of this step
        path.mkdir(parents=True)
    barrier()
    msd, osd = get_state_dict(model, optimizer)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(path))
    barrier()
    if is_main:
        save_checkpoint(path, step, {**trainer_state, "model": {}}, keep=0)
        (path / f"step_{step:07d}.pt").rename(path / "trainer.pt")
        for _, old in list_sharded(directory)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return path


def load_sharded(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Load the shards at ``path`` into ``model`` and ``optimizer`` (resharded to this run's
    processes); returns the plain trainer state of ``trainer.pt``."""
    path = Path(path)
    state = load_checkpoint(path / "trainer.pt")
    msd, osd = get_state_dict(model, optimizer)
    target = {"model": msd, "optim": osd}
    try:
        dcp.load(target, checkpoint_id=str(path), storage_reader=SafeReader(str(path)))
    except CheckpointError:
        raise
    except Exception as e:  # DCP wraps per-rank failures (missing keys, shapes) in its own error
        why = " ".join(str(e).split())[:300]
        raise CheckpointError(f"sharded checkpoint {path} does not fit this run ({why})") from None
    set_state_dict(model, optimizer, model_state_dict=target["model"],
                   optim_state_dict=target["optim"])
    return state


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole (unsharded) model state on the CPU, on rank 0 (empty on the others). A
    collective: every rank calls it."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                cpu_offload=True))
