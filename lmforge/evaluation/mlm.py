"""Held-out accuracy of a masked LM: masked-token accuracy and next-sentence accuracy."""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..objectives.mlm import mlm_nsp_outputs


@torch.no_grad()
def mlm_metrics(model: nn.Module, batches: Iterable[dict], device: str | torch.device = "cpu") -> dict:
    """Over masked batches (see :mod:`lmforge.objectives.mlm`): ``mlm_accuracy`` (argmax at
    the masked positions equals the original token), ``mlm_loss``, ``nsp_accuracy``,
    ``nsp_loss``, and the counts they are averaged over. Heads the model lacks are left out."""
    was_training = model.training
    model.eval()
    sums = {"mlm_correct": 0, "mlm_loss": 0.0, "masked": 0, "nsp_correct": 0, "nsp_loss": 0.0,
            "pairs": 0}
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        out, target = mlm_nsp_outputs(model, batch)
        if out.mlm_logits is not None and target.numel():
            logits = out.mlm_logits.float()  # (N, V)
            sums["mlm_correct"] += int((logits.argmax(-1) == target).sum())
            sums["mlm_loss"] += float(F.cross_entropy(logits, target, reduction="sum"))
            sums["masked"] += target.numel()
        if out.nsp_logits is not None and "nsp_labels" in batch:
            logits, labels = out.nsp_logits.float(), batch["nsp_labels"]  # (B, 2), (B,)
            sums["nsp_correct"] += int((logits.argmax(-1) == labels).sum())
            sums["nsp_loss"] += float(F.cross_entropy(logits, labels, reduction="sum"))
            sums["pairs"] += labels.numel()
    model.train(was_training)
    res: dict = {}
    if sums["masked"]:
        res.update(mlm_accuracy=sums["mlm_correct"] / sums["masked"],
                   mlm_loss=sums["mlm_loss"] / sums["masked"], masked_tokens=sums["masked"])
    if sums["pairs"]:
        res.update(nsp_accuracy=sums["nsp_correct"] / sums["pairs"],
                   nsp_loss=sums["nsp_loss"] / sums["pairs"], pairs=sums["pairs"])
    return res
