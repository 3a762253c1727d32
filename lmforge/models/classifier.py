"""Sequence classification on an encoder: :class:`SequenceClassifier` = :class:`EncoderModel`
+ :class:`ClassificationHead` reading one vector per sequence.

The vector is the [CLS] state (through BERT's pooler when the model has one) or the mean/max
over real tokens (``cfg.classifier_pooling``); the head is dropout + a linear layer to
``cfg.n_classes`` logits. The state-dict keys of the encoder are those of
:class:`~lmforge.models.MaskedLM` (``encoder.*``), so a pre-trained encoder's weights load
into a classifier as they are; the head adds ``head.proj.*``.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig
from .encoder import EncoderModel
from .heads import pool
from .transformer import count_params, init_weights


class ClassificationHead(nn.Module):
    """Sentence features (B, C) -> class logits (B, K): dropout + linear."""

    def __init__(self, d_model: int, n_classes: int, dropout: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.proj = nn.Linear(d_model, n_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # (B, C) -> (B, K)
        return self.proj(self.drop(features))


class SequenceClassifier(nn.Module):
    """Token ids -> class logits (B, K) (``model.heads = "classifier"``)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = EncoderModel(cfg)
        self.pooling = cfg.classifier_pooling or "cls"
        dropout = cfg.dropout if cfg.classifier_dropout is None else cfg.classifier_dropout
        self.head = ClassificationHead(cfg.d_model, cfg.n_classes, dropout)
        init_weights(self.head, cfg.init_std, cfg.n_layer)
        self.encoder_frozen = False

    def features(
        self,
        idx: torch.Tensor,  # (B, T) token ids
        token_type_ids: torch.Tensor | None = None,  # (B, T)
        padding_mask: torch.Tensor | None = None,  # (B, T) bool, True = real token
    ) -> torch.Tensor:  # (B, C): what the head reads
        if self.encoder.backbone.token_type is None:
            token_type_ids = None  # a model without segment embeddings reads pairs without them
        h = self.encoder(idx, token_type_ids, padding_mask)  # (B, T, C)
        if self.pooling == "cls" and self.encoder.pooler is not None:
            return self.encoder.pooler(h)
        return pool(h, padding_mask, self.pooling)

    def forward(self, idx: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                padding_mask: torch.Tensor | None = None) -> torch.Tensor:  # (B, K) logits
        return self.head(self.features(idx, token_type_ids, padding_mask))

    def freeze_encoder(self, frozen: bool = True) -> "SequenceClassifier":
        """Head-only training: the encoder's weights get no gradients (so the optimiser never
        sees them) and the encoder stays in eval mode (no dropout) even under ``train()``."""
        self.encoder_frozen = frozen
        self.encoder.requires_grad_(not frozen)
        return self.train(self.training)

    def train(self, mode: bool = True) -> "SequenceClassifier":
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self

    def tied_keys(self) -> set[str]:
        return set()

    def num_params(self, trainable_only: bool = False) -> int:
        """Parameter count, tied weights counted once."""
        return count_params(self, trainable_only)
