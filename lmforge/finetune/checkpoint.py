"""Training checkpoints of parameter-efficient runs: only what trains.

A LoRA / QLoRA run (or a classifier trained with a frozen encoder) changes a few tensors: the
adapters and the modules trained fully (a classifier head). :class:`AdapterTrainer` is the
shared :class:`~lmforge.training.Trainer` whose checkpoints hold just those tensors (the
parameters with ``requires_grad``), the optimiser state, RNG states and the step, plus a
fingerprint of every frozen tensor. Resuming rebuilds the frozen model the same way (the
same ``init_from``, quantisation and seed), checks the fingerprint, and loads the trainable
tensors: it continues exactly as from a whole-model checkpoint. A whole-model checkpoint
(from an older run) still resumes.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from ..errors import CheckpointError
from ..training import Trainer

SCOPE_KEY, TRAINABLE_SCOPE = "model_scope", "trainable"


def trainable_names(model: nn.Module) -> list[str]:
    """State-dict names of the parameters that require gradients (every name of a shared one)."""
    return [n for n, p in model.named_parameters(remove_duplicate=False) if p.requires_grad]


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters only, by their state-dict names (detached, not copied)."""
    names = set(trainable_names(model))
    return {k: v for k, v in model.state_dict().items() if k in names}


def frozen_fingerprint(model: nn.Module) -> str:
    """sha256 (16 hex digits) over the names, dtypes, shapes and exact bytes of every tensor of
    ``model.state_dict()`` that does not train (base weights, NF4 codes, buffers)."""
    trainable = set(trainable_names(model))
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        if name in trainable:
            continue
        t = t.detach().contiguous().cpu()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


class AdapterTrainer(Trainer):
    """A :class:`~lmforge.training.Trainer` whose checkpoints hold only the trainable tensors
    (adapters, modules to save) besides the optimiser/RNG/step state; see the module docstring."""

    _frozen_fp: str | None = None

    def frozen_fingerprint(self) -> str:
        if self._frozen_fp is None:  # the frozen tensors never change: hash them once
            self._frozen_fp = frozen_fingerprint(self.model)
        return self._frozen_fp

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["model"] = trainable_state_dict(self.model)
        state[SCOPE_KEY] = TRAINABLE_SCOPE
        state["frozen_fingerprint"] = self.frozen_fingerprint()
        return state

    def load_state_dict(self, state: dict) -> None:
        if state.get(SCOPE_KEY) != TRAINABLE_SCOPE:
            super().load_state_dict(state)  # a whole-model checkpoint
            return
        want, got = set(trainable_names(self.model)), set(state["model"])
        if want != got:
            missing, extra = sorted(want - got), sorted(got - want)
            raise CheckpointError(
                f"the checkpoint's trainable tensors do not match this run's (missing "
                f"{missing[:4]}, unexpected {extra[:4]}): resume with the same LoRA settings "
                "(rank, targets, mode/method) as the run that wrote it, or start a new out_dir")
        have = self.frozen_fingerprint()
        if state.get("frozen_fingerprint") != have:
            raise CheckpointError(
                f"the frozen base weights differ from those the checkpoint was trained on "
                f"(fingerprint {state.get('frozen_fingerprint')}, now {have}): resume from the "
                "same init_from model directory, quantisation and seed")
        full = self.model.state_dict()
        full.update(state["model"])
        super().load_state_dict({**state, "model": full})
