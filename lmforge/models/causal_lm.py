"""Decoder-only language model (GPT, Llama): backbone + language-model head."""

from __future__ import annotations

import torch
from torch import nn

from ..blocks import KVCache
from ..blocks.relative import XLMemory
from .config import ModelConfig
from .transformer import Transformer, count_params, init_weights


class CausalLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError("model.vocab_size must be set (it is taken from the tokenizer)")
        self.cfg = cfg
        self.backbone = Transformer(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        init_weights(self, cfg.init_std, cfg.n_layer)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.backbone.embed.weight

    def forward(self, idx: torch.Tensor, *, last_only: bool = False, **kw) -> torch.Tensor:
        """idx (B, T) -> logits (B, T, V), or (B, 1, V) with ``last_only`` (generation).
        Keyword arguments (positions, padding_mask, cache, attn_out, memory) go to the
        backbone."""
        h = self.backbone(idx, **kw)  # (B, T, C)
        if last_only:
            h = h[:, -1:]
        return self.lm_head(h)

    def new_cache(self, batch: int, max_len: int | None = None, dtype=None, device=None,
                  kv_dtype=None) -> KVCache:
        """An empty KV cache for ``batch`` rows of ``max_len`` positions (default the context),
        computing in ``dtype`` (default the model's). ``kv_dtype`` (``fp32``, ``bf16``, ``int8``)
        is how keys/values are stored; None: ``model.kv_cache_dtype`` if set
        (:func:`lmforge.blocks.kv_cache.set_kv_cache_dtype`), else the compute dtype."""
        cfg = self.cfg
        p = self.lm_head.weight
        return KVCache(cfg.n_layer, batch, cfg.n_kv_head or cfg.n_head,
                       max_len or cfg.context_length, cfg.dim_head,
                       dtype=dtype or p.dtype, device=device or p.device,
                       kv_dtype=kv_dtype or getattr(self, "kv_cache_dtype", None))

    def new_memory(self, length: int | None = None, segment: int | None = None) -> XLMemory:
        """An empty Transformer-XL memory for ``model(x, memory=mem)``: ``length`` positions
        kept per layer (default ``model.memory_length``; evaluation may use more than training
        did), segments of ``segment`` tokens (default the context length)."""
        cfg = self.cfg
        return XLMemory(cfg.n_layer, cfg.memory_length if length is None else length,
                        segment or cfg.context_length)

    def tied_keys(self) -> set[str]:
        """State-dict keys that alias another tensor (stored once in a model directory)."""
        return {"lm_head.weight"} if self.cfg.tie_embeddings else set()

    def num_params(self, trainable_only: bool = False) -> int:
        """Parameter count, tied weights counted once."""
        return count_params(self, trainable_only)
