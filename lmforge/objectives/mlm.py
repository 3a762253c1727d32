"""Masked language modelling and next-sentence prediction (BERT pre-training).

:func:`mask_tokens` picks ``prob`` of the maskable tokens; of those, 80% become [MASK], 10% a
random token and 10% stay as they are, and the model must predict the original token at each
picked position (labels are -100 everywhere else). :func:`mlm_nsp_loss` is the objective the
trainer calls: masked-LM cross-entropy plus, when the model has an NSP head and the batch
labels, next-sentence cross-entropy.

A batch is a dict of tensors: ``input_ids`` (B, T), ``token_type_ids`` (B, T), ``padding_mask``
(B, T) bool (True = real token), ``mlm_labels`` (B, T) and ``nsp_labels`` (B,) (0 = segment B
follows segment A, 1 = B is random).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, DataError, TokenizerError
from ..tokenizers.special import IGNORE_INDEX

IGNORE = IGNORE_INDEX  # the label of positions that are not predicted


def mask_tokens(
    ids: torch.Tensor,  # (B, T) token ids
    special_mask: torch.Tensor,  # (B, T) bool: True = never mask (special tokens, padding)
    vocab_size: int,
    mask_id: int,
    prob: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (inputs (B, T) with the picked tokens corrupted, labels (B, T): the original
    token at picked positions, -100 elsewhere). ``ids`` is not modified."""
    if special_mask.shape != ids.shape or special_mask.dtype != torch.bool:
        raise DataError(f"special_mask must be a bool tensor shaped like the ids {tuple(ids.shape)}, "
                        f"got {special_mask.dtype} {tuple(special_mask.shape)}")
    if not 0.0 < prob < 1.0:
        raise ConfigError(f"masking probability must be in (0, 1), got {prob}")
    if not 0 <= mask_id < vocab_size:
        raise TokenizerError(f"mask id {mask_id} is outside the vocabulary (0..{vocab_size - 1})")
    kw = {"device": ids.device, "generator": generator}
    picked = (torch.rand(ids.shape, **kw) < prob) & ~special_mask  # (B, T)
    how = torch.rand(ids.shape, **kw)  # (B, T): < 0.8 -> [MASK], < 0.9 -> random, else kept
    random_ids = torch.randint(vocab_size, ids.shape, **kw, dtype=ids.dtype)  # (B, T)
    inputs = torch.where(picked & (how < 0.8), torch.full_like(ids, mask_id), ids)
    inputs = torch.where(picked & (how >= 0.8) & (how < 0.9), random_ids, inputs)
    labels = torch.where(picked, ids, torch.full_like(ids, IGNORE))
    return inputs, labels


def special_tokens_mask(ids: torch.Tensor, special_ids: list[int] | torch.Tensor,
                        padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T) bool: True where ``ids`` is one of ``special_ids`` or is padding."""
    special = torch.isin(ids, torch.as_tensor(special_ids, dtype=ids.dtype, device=ids.device))
    return special if padding_mask is None else special | ~padding_mask


def mask_batch(batch: dict, vocab_size: int, mask_id: int, special_ids: list[int],
               prob: float = 0.15, generator: torch.Generator | None = None) -> dict:
    """A copy of a pair batch with ``input_ids`` masked and ``mlm_labels`` added."""
    special = special_tokens_mask(batch["input_ids"], special_ids, batch.get("padding_mask"))
    inputs, labels = mask_tokens(batch["input_ids"], special, vocab_size, mask_id, prob, generator)
    return {**batch, "input_ids": inputs, "mlm_labels": labels}


def mlm_nsp_outputs(model: nn.Module, batch: dict):
    """Run the model on the masked positions only: (MaskedLMOutput, mlm targets (N,))."""
    labels = batch["mlm_labels"]  # (B, T)
    picked = labels != IGNORE  # (B, T)
    out = model(batch["input_ids"], batch.get("token_type_ids"), batch.get("padding_mask"),
                mlm_positions=picked)
    return out, labels[picked]


def mlm_nsp_losses(model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
    """{"mlm": masked-LM cross-entropy, "nsp": next-sentence cross-entropy (when computed)}."""
    out, target = mlm_nsp_outputs(model, batch)
    losses = {}
    if out.mlm_logits is not None:
        logits = out.mlm_logits.float()  # (N, V)
        # a batch where nothing was picked contributes 0 (cross-entropy of nothing is NaN)
        losses["mlm"] = F.cross_entropy(logits, target) if target.numel() else logits.sum() * 0.0
    if out.nsp_logits is not None and "nsp_labels" in batch:
        losses["nsp"] = F.cross_entropy(out.nsp_logits.float(), batch["nsp_labels"])
    if not losses:
        raise ConfigError("the model has neither an MLM head nor an NSP head with labels in the "
                          "batch (model.heads = \"none\"): there is nothing to train")
    return losses


def mlm_nsp_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    """The pre-training objective: MLM loss + NSP loss."""
    return sum(mlm_nsp_losses(model, batch).values())
