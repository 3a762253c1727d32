"""Sequence-to-sequence cross-entropy with teacher forcing: the decoder reads the target
shifted right ([start] y1 .. y(n-1)) and predicts y1 .. yn [end] at every position at once."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..tokenizers.special import IGNORE_INDEX


def seq2seq_loss(model: nn.Module, batch: dict, label_smoothing: float = 0.0) -> torch.Tensor:
    """batch: ``src`` (B, S), ``src_mask`` (B, S) bool, ``tgt_in`` (B, T), ``tgt_out`` (B, T)
    with -100 at padding. Label smoothing spreads ``label_smoothing`` of each target's
    probability mass over the whole vocabulary (0.1 in the original Transformer)."""
    logits = model(batch["src"], batch["tgt_in"], batch.get("src_mask"))  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1).float(), batch["tgt_out"].flatten(),
                           ignore_index=IGNORE_INDEX, label_smoothing=label_smoothing)


def seq2seq_objective(label_smoothing: float = 0.0):
    """The trainer's ``objective(model, batch)`` for a given label smoothing."""
    return partial(seq2seq_loss, label_smoothing=label_smoothing)
