"""Causal language modelling: predict token t+1 from tokens 0..t (cross-entropy)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..tokenizers.special import IGNORE_INDEX


def causal_lm_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """batch = (inputs (B, T), targets (B, T)); targets of IGNORE_INDEX (-100) are ignored."""
    x, y = batch
    logits = model(x)  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=IGNORE_INDEX)
