"""Bidirectional encoder (BERT, MiniLM): the shared :class:`Transformer` backbone with
``arch = "encoder"`` (no causal mask), plus BERT's pooler; and :class:`MaskedLM`, the encoder
with its pre-training heads (masked-LM and next-sentence prediction)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..blocks import make_norm
from ..errors import ConfigError
from .config import ModelConfig
from .heads import MLMHead, NSPHead, Pooler
from .transformer import Transformer, check_arch, count_params, init_weights


class EncoderModel(nn.Module):
    """Token ids -> contextual hidden states (B, T, C); every token sees every real token."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        check_arch(cfg, "encoder", "EncoderModel")
        self.cfg = cfg
        self.backbone = Transformer(cfg)
        self.pooler = Pooler(cfg.d_model) if cfg.pooler else None
        init_weights(self, cfg.init_std, cfg.n_layer)

    def forward(
        self,
        idx: torch.Tensor,  # (B, T) token ids
        token_type_ids: torch.Tensor | None = None,  # (B, T) segment ids (0 for A, 1 for B)
        padding_mask: torch.Tensor | None = None,  # (B, T) bool, True = real token
        **kw,  # positions, attn_out: passed to the backbone
    ) -> torch.Tensor:  # (B, T, C)
        if idx.dim() != 2:
            raise ConfigError(f"token ids must have shape (B, T), got {tuple(idx.shape)}")
        for name, t in (("token_type_ids", token_type_ids), ("padding_mask", padding_mask)):
            if t is not None and t.shape != idx.shape:
                raise ConfigError(f"{name} has shape {tuple(t.shape)}; it must match the token "
                                  f"ids, {tuple(idx.shape)}")
        if idx.shape[1] > self.cfg.context_length:
            raise ConfigError(f"{idx.shape[1]} tokens do not fit the model's context of "
                              f"{self.cfg.context_length}; truncate the input")
        return self.backbone(idx, token_type_ids=token_type_ids, padding_mask=padding_mask, **kw)

    def pooled(self, hidden: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, C)
        """BERT's pooled output: dense + tanh on the first ([CLS]) token."""
        if self.pooler is None:
            raise ConfigError("this encoder has no pooler (model.pooler = false); use "
                              "lmforge.models.pool(hidden, padding_mask, mode) instead")
        return self.pooler(hidden)


class MaskedLMOutput(NamedTuple):
    hidden: torch.Tensor  # (B, T, C)
    pooled: torch.Tensor | None  # (B, C), when the model has a pooler
    mlm_logits: torch.Tensor | None  # (B, T, V), or (N, V) at the N positions asked for
    nsp_logits: torch.Tensor | None  # (B, 2): 0 = B follows A, 1 = B is random


class MaskedLM(nn.Module):
    """Encoder + masked-LM head + next-sentence head (which heads: ``cfg.heads``)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = EncoderModel(cfg)
        self.mlm = self.nsp = None
        if "mlm" in cfg.heads:
            norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)
            self.mlm = MLMHead(cfg.d_model, cfg.vocab_size, cfg.activation, norm)
            init_weights(self.mlm, cfg.init_std, cfg.n_layer)
            if cfg.tie_embeddings:
                self.mlm.decoder.weight = self.encoder.backbone.embed.weight
        if "nsp" in cfg.heads:
            self.nsp = NSPHead(cfg.d_model)
            init_weights(self.nsp, cfg.init_std, cfg.n_layer)

    def forward(
        self,
        idx: torch.Tensor,  # (B, T)
        token_type_ids: torch.Tensor | None = None,  # (B, T)
        padding_mask: torch.Tensor | None = None,  # (B, T) bool, True = real token
        mlm_positions: torch.Tensor | None = None,  # (B, T) bool: predict only these tokens
        **kw,
    ) -> MaskedLMOutput:
        h = self.encoder(idx, token_type_ids, padding_mask, **kw)  # (B, T, C)
        pooled = self.encoder.pooler(h) if self.encoder.pooler is not None else None  # (B, C)
        mlm = None
        if self.mlm is not None:
            mlm = self.mlm(h if mlm_positions is None else h[mlm_positions])  # (B, T, V) | (N, V)
        nsp = self.nsp(pooled) if self.nsp is not None else None  # (B, 2)
        return MaskedLMOutput(h, pooled, mlm, nsp)

    def tied_keys(self) -> set[str]:
        """State-dict keys that alias another tensor (stored once in a model directory)."""
        return {"mlm.decoder.weight"} if self.mlm is not None and self.cfg.tie_embeddings else set()

    def num_params(self, trainable_only: bool = False) -> int:
        """Parameter count, tied weights counted once."""
        return count_params(self, trainable_only)
