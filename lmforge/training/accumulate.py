"""Gradient accumulation weighted by target tokens.

An optimiser step over several micro-batches (and processes) should minimise the mean loss over
every target token of the step, not the mean of per-micro-batch means: with padding or masked
labels the micro-batches hold different numbers of targets, and averaging their means weights
a token of a short micro-batch more than one of a long one. So each micro-batch's mean loss is
weighted by its share of the step's targets (summed over all processes): the sum of the weighted
losses is the mean over all targets, exactly what one large batch gives.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..tokenizers.special import IGNORE_INDEX
from .distributed import DistInfo


def target_count(batch) -> int | None:
    """Target tokens in a batch of the built-in objectives, or None when they cannot be known
    before the loss is computed (then micro-batches are weighted equally):

      * ``(inputs, targets)`` (causal LM): targets that are not IGNORE_INDEX;
      * a dict with ``tgt_out`` (seq2seq): the same;
      * a dict with ``labels`` shaped like ``input_ids`` (SFT, shifted inside the loss):
        the labels after the first position that are not IGNORE_INDEX."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2 and torch.is_tensor(batch[1]) \
            and not batch[1].is_floating_point():
        return int((batch[1] != IGNORE_INDEX).sum())
    if isinstance(batch, dict):
        if torch.is_tensor(batch.get("tgt_out")):
            return int((batch["tgt_out"] != IGNORE_INDEX).sum())
        labels, ids = batch.get("labels"), batch.get("input_ids")
        if torch.is_tensor(labels) and torch.is_tensor(ids) and labels.shape == ids.shape \
                and labels.dim() == 2:
            return int((labels[:, 1:] != IGNORE_INDEX).sum())
    return None


def micro_weights(batches: list, info: DistInfo, device: torch.device) -> tuple[list[float], list[float]]:
    """(backward weights, report weights) for the micro-batches of one step on this process.

    Backward weight of micro-batch i = n_i * world / N, with N the targets of the whole step
    over all processes: data parallelism averages gradients over the processes, so the sum is
    the gradient of the mean over all N targets. Report weights n_i / n (this process's mean).
    Without known counts (or with none), each micro-batch weighs 1 / len(batches)."""
    counts = [target_count(b) for b in batches]
    equal = [1.0 / len(batches)] * len(batches)
    if any(c is None for c in counts):
        return equal, equal
    local = sum(counts)
    total = local
    if info.enabled:
        t = torch.tensor([float(local)], device=device)
        dist.all_reduce(t)
        total = float(t.item())
    if total <= 0:
        return equal, equal
    report = [c / local for c in counts] if local else [0.0] * len(counts)
    return [c * info.world_size / total for c in counts], report
