"""Supervised fine-tuning (instruction tuning): cross-entropy over the assistant's tokens only.

Batches come from :mod:`lmforge.data.chat`: ``(input_ids (B, T), labels (B, T)[,
padding_mask (B, T)])`` with labels aligned to the inputs (``labels[i]`` is ``input_ids[i]``
or ``IGNORE_INDEX``, the Hugging Face convention); the loss shifts them: the logits at
position t predict label t + 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..tokenizers.special import IGNORE_INDEX

LOGITS_PER_CHUNK = 1 << 23
"""The trained-token path computes at most this many logits (rows x vocabulary) at once."""


def _unpack(batch) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(input_ids, labels, keyword arguments of the model call) from a tuple or dict batch."""
    if isinstance(batch, dict):
        ids, labels, mask = batch["input_ids"], batch["labels"], batch.get("padding_mask")
    else:
        ids, labels, *rest = batch
        mask = rest[0] if rest else None
    return ids, labels, ({"padding_mask": mask} if mask is not None else {})


def has_separate_head(model: nn.Module) -> bool:
    """Whether ``model`` is a backbone plus output head as its own direct children
    (``model.backbone(ids) -> (B, T, C)``, ``model.lm_head(h) -> (B, T, V)``), as lmforge's
    decoders are. A wrapper (DDP, ``torch.compile``) holds the model as one child and is not."""
    return "backbone" in model._modules and "lm_head" in model._modules


def sft_loss(model: nn.Module, batch) -> torch.Tensor:
    """Mean cross-entropy over the trained (assistant) tokens of a batch.

    batch = (input_ids (B, T), labels (B, T)[, padding_mask (B, T)]) or a dict with those
    keys (``input_ids``, ``labels``, ``padding_mask``); labels aligned with the inputs.

    Any model called as ``model(ids[, padding_mask=...]) -> logits (B, T, V)`` works (the call
    :func:`~lmforge.objectives.causal_lm.causal_lm_loss` makes). For a model with a separate
    output head (:func:`has_separate_head`) the head runs only on the positions that predict a
    trained token, a chunk of rows at a time, each chunk's logits recomputed in the backward
    pass instead of kept: the (B, T, vocabulary) logits never exist (with SmolLM2's 49,152
    tokens, 200 MB per 1,024 tokens, several copies of them in the backward pass). The loss
    and gradients are those of the all-logits path.
    """
    ids, labels, kw = _unpack(batch)
    if has_separate_head(model):
        return _trained_token_loss(model, ids, labels, kw)
    logits = model(ids, **kw)  # (B, T, V)
    pred = logits[:, :-1].flatten(0, 1).float()  # ((B*(T-1)), V): position t predicts t + 1
    target = labels[:, 1:].flatten()  # (B*(T-1),)
    if not bool((target != IGNORE_INDEX).any()):
        return logits.sum() * 0.0  # nothing to train in this batch: a zero that keeps the graph
    return F.cross_entropy(pred, target, ignore_index=IGNORE_INDEX)


def _chunk_nll(head: nn.Module, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of the rows ``h`` (N, C) against ``y`` (N,)."""
    return F.cross_entropy(head(h).float(), y, reduction="sum")


def _trained_token_loss(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor,
                        kw: dict) -> torch.Tensor:
    h = model.backbone(ids, **kw)  # (B, T, C)
    target = labels[:, 1:]  # (B, T-1): position t predicts label t + 1
    keep = target != IGNORE_INDEX  # (B, T-1)
    n = int(keep.sum())
    if n == 0:
        return h.sum() * 0.0  # nothing to train in this batch: a zero that keeps the graph
    rows, ys = h[:, :-1][keep], target[keep]  # (N, C), (N,)
    step = max(1, LOGITS_PER_CHUNK // model.lm_head.out_features)
    total = h.new_zeros((), dtype=torch.float32)
    for i in range(0, n, step):
        if torch.is_grad_enabled():
            total = total + checkpoint(_chunk_nll, model.lm_head, rows[i:i + step],
                                       ys[i:i + step], use_reentrant=False)
        else:
            total = total + _chunk_nll(model.lm_head, rows[i:i + step], ys[i:i + step])
    return total / n


def trained_tokens(labels: torch.Tensor) -> int:
    """How many tokens of a batch's labels (B, T) :func:`sft_loss` averages over."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())
