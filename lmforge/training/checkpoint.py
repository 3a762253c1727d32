"""Resumable training checkpoints: model, optimiser, RNG states, step and data position.

Each checkpoint is one file ``checkpoints/step_NNNNNNN.pt`` written atomically; the newest
readable one is the resume point. The learning rate is a pure function of the step, and the
batch of step s is a pure function of (seed, s), so step + RNG states are the whole data
position.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError
from ..files.atomic import atomic_write

_NAME = re.compile(r"^step_(\d{7,})\.pt$")


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint files, oldest first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(directory: str | Path, step: int, state: dict, keep: int = 2) -> Path:
    path = Path(directory) / f"step_{step:07d}.pt"
    atomic_write(path, lambda p: torch.save(state, p))
    if keep > 0:
        for old in list_checkpoints(directory)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except Exception as e:  # zip/pickle errors of a truncated or corrupt file
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(e).__name__}: {e}); delete it to "
            "resume from the previous checkpoint, or start again without --resume") from None
    if not isinstance(state, dict) or "step" not in state or "model" not in state:
        raise CheckpointError(f"checkpoint {path} is not an lmforge training checkpoint")
    return state


def latest_checkpoint(directory: str | Path) -> Path | None:
    ckpts = list_checkpoints(directory)
    return ckpts[-1] if ckpts else None
