"""Shared helpers of the fine-tuning tests."""

import torch

from lmforge.models import ModelConfig, build_model


def tiny_config(**kw) -> ModelConfig:
    """A small Llama-style decoder: RoPE, SwiGLU (gate/up/down), RMSNorm, tied embeddings."""
    base = dict(vocab_size=97, d_model=64, n_layer=2, n_head=4, context_length=64,
                positional="rope", activation="swiglu", norm="rmsnorm", bias=False)
    base.update(kw)
    return ModelConfig(**base)


def tiny_model(seed: int = 0, **kw):
    torch.manual_seed(seed)
    return build_model(tiny_config(**kw)).eval()

