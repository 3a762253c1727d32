"""Resumable training checkpoints: model, optimiser, RNG states, step and data position.

Each checkpoint is one file ``checkpoints/step_NNNNNNN.pt`` written atomically; the newest
readable one is the resume point. The learning rate is a pure function of the step, and the
batch of step s is a pure function of (seed, s), so step + RNG states are the whole data
position.

A checkpoint holds only tensors, numbers, strings, None and lists/tuples/dicts of them: the
RNG states are stored as tensors and plain numbers (:func:`rng_state`), so it loads with
``torch.load(weights_only=True)``, which never runs code from the file. Anything else (a
planted file, or a checkpoint of lmforge before this format, which pickled numpy's RNG state)
is refused, not unpickled.
"""

from __future__ import annotations

import errno

import pickle
import random
import re
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError
from ..files.atomic import atomic_write

_NAME = re.compile(r"^step_(\d{7,})\.pt$")
_MT_WORDS = 624  # the state of a Mersenne Twister (numpy's MT19937 and Python's random)


def rng_state() -> dict:
    """Every RNG state of this process as tensors and plain numbers (no pickled objects)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, words, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)),
                       "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "python": {"version": int(version), "words": torch.tensor(words, dtype=torch.int64),
                        "gauss_next": gauss_next}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state(s: dict) -> tuple:
    keys = s["keys"]
    if s["kind"] != "MT19937" or not isinstance(keys, torch.Tensor) or keys.shape != (_MT_WORDS,):
        raise ValueError("numpy's state is not an MT19937 state")
    return ("MT19937", keys.numpy().astype(np.uint32), int(s["pos"]), int(s["has_gauss"]),
            float(s["gauss"]))


def _python_state(s: dict) -> tuple:
    words = s["words"]
    if not isinstance(words, torch.Tensor) or words.shape != (_MT_WORDS + 1,):
        raise ValueError("Python's random state has the wrong size")
    gauss = s["gauss_next"]
    return (int(s["version"]), tuple(int(w) for w in words.tolist()),
            None if gauss is None else float(gauss))


def set_rng_state(state: dict, where: str = "the checkpoint") -> None:
    """Restore what :func:`rng_state` returned; a malformed state is a CheckpointError."""
    try:
        torch_state, np_state = state["torch"], _numpy_state(state["numpy"])
        py_state = _python_state(state["python"])
        if not isinstance(torch_state, torch.Tensor) or torch_state.dtype != torch.uint8:
            raise ValueError("torch's state is not a byte tensor")
        torch.set_rng_state(torch_state)
        np.random.set_state(np_state)
        random.setstate(py_state)
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
    except (KeyError, TypeError, ValueError, RuntimeError, OverflowError) as e:
        raise CheckpointError(f"{where} holds a malformed RNG state ({type(e).__name__}: {e}); "
                              "delete it to resume from the previous checkpoint") from None


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint files, oldest first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def _torch_save(state: dict, tmp: Path, path: Path) -> None:
    """torch.save, whose zip writer reports a failed write (a full disk, a file-size limit) as
    a RuntimeError: raised as the OSError it is, naming the checkpoint."""
    try:
        torch.save(state, tmp)
    except RuntimeError as e:
        reason = str(e).splitlines()[0][:200]
        raise OSError(errno.EIO, f"write failed, is the disk full? ({reason})", str(path)) from None


def save_checkpoint(directory: str | Path, step: int, state: dict, keep: int = 2) -> Path:
    """Write ``state`` as ``step_NNNNNNN.pt`` and delete all but the newest ``keep``."""
    path = Path(directory) / f"step_{step:07d}.pt"
    atomic_write(path, lambda p: _torch_save(state, p, path))
    if keep > 0:
        for old in list_checkpoints(directory)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def _refused(e: Exception) -> str:
    """What the weights-only unpickler refused to import, as `` (it needs GLOBAL)``."""
    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
    return f" (it needs {m.group(1)})" if m else ""


def load_checkpoint(path: str | Path) -> dict:
    """The state saved at ``path``, loaded without unpickling anything but plain data."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except pickle.UnpicklingError as e:  # what weights_only refuses: objects, code
        raise CheckpointError(
            f"checkpoint {path.name} ({path}) is not a plain-tensor lmforge checkpoint; refusing "
            f"to unpickle it{_refused(e)}. A checkpoint of an older lmforge cannot be resumed: "
            "start again without --resume (or with --overwrite); never resume a run directory "
            "you did not write yourself") from None
    except Exception as e:  # zip errors of a truncated or corrupt file
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(e).__name__}: {e}); delete it to "
            "resume from the previous checkpoint, or start again without --resume") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int) \
            or not isinstance(state.get("model"), dict):
        raise CheckpointError(f"checkpoint {path} is not an lmforge training checkpoint")
    return state


def latest_checkpoint(directory: str | Path) -> Path | None:
    ckpts = list_checkpoints(directory)
    return ckpts[-1] if ckpts else None
