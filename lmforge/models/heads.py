"""Heads that sit on an encoder's hidden states (BERT layout), and sentence pooling.

* :class:`Pooler`  – dense + tanh on the first ([CLS]) token: BERT's "pooled output".
* :class:`MLMHead` – masked-LM head: dense + activation + norm, then a projection to the
  vocabulary whose weight is tied to the word embeddings, plus a per-token bias.
* :class:`NSPHead` – next-sentence classifier (2 classes) on the pooled output.
* :func:`pool`     – sentence embeddings from hidden states: [CLS], mean or max over real tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from ..blocks.feedforward import activation_fn
from ..errors import ConfigError

POOL_MODES = ("cls", "mean", "max")


class Pooler(nn.Module):
    def __init__(self, d_model: int):
        super().__init__()
        self.dense = nn.Linear(d_model, d_model)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, C)
        return torch.tanh(self.dense(hidden[:, 0]))


class MLMHead(nn.Module):
    """Hidden states -> vocabulary logits. ``norm`` is the model's norm layer (LayerNorm for
    BERT); the model ties ``decoder.weight`` to its token embeddings."""

    def __init__(self, d_model: int, vocab_size: int, activation: str, norm: nn.Module):
        super().__init__()
        self.dense = nn.Linear(d_model, d_model)
        self.act = activation_fn(activation)
        self.norm = norm
        self.decoder = nn.Linear(d_model, vocab_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (..., C) -> (..., V)
        return self.decoder(self.norm(self.act(self.dense(hidden))))


class NSPHead(nn.Module):
    """Is-next / random classifier on the pooled [CLS] state (:class:`Pooler` output).
    Class 0 = segment B follows segment A, 1 = B is a random segment (BERT's convention)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.classifier = nn.Linear(d_model, 2)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:  # (B, C) -> (B, 2)
        return self.classifier(pooled)


def pool(hidden: torch.Tensor, padding_mask: torch.Tensor | None = None,
         mode: str = "mean") -> torch.Tensor:
    """One vector per sequence from hidden states (B, T, C) -> (B, C).

    ``cls``: the first token; ``mean``: the average over real tokens (sentence-transformers'
    mean pooling); ``max``: the element-wise maximum over real tokens. ``padding_mask`` (B, T)
    bool, True = real token; None = every token is real.
    """
    if mode not in POOL_MODES:
        raise ConfigError(f"pooling mode {mode!r} is unknown; choose one of {', '.join(POOL_MODES)}")
    if hidden.dim() != 3:
        raise ConfigError(f"pool() needs hidden states of shape (B, T, C), got {tuple(hidden.shape)}")
    if mode == "cls":
        return hidden[:, 0]
    if padding_mask is None:
        return hidden.mean(1) if mode == "mean" else hidden.amax(1)
    if padding_mask.shape != hidden.shape[:2]:
        raise ConfigError(f"padding_mask has shape {tuple(padding_mask.shape)}; the hidden states "
                          f"need (B, T) = {tuple(hidden.shape[:2])}")
    m = padding_mask[..., None].to(hidden.dtype)  # (B, T, 1)
    if mode == "mean":
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    return hidden.masked_fill(~padding_mask[..., None], float("-inf")).amax(1)
