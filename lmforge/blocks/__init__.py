"""Transformer building blocks, each a small module of its own."""

from .attention import MultiHeadAttention, causal_mask, scaled_dot_product_attention
from .attention_backends import (ATTENTION_BACKENDS, AttentionOptions, attention_forward,
                                 backend_settings,
                                 register_attention)
from . import attention_sparse  # noqa: F401  registers longformer, bigbird, sparse_*, full
from . import attention_linformer, attention_lsh, attention_performer  # noqa: F401  register
from .block import TransformerBlock
from .embedding import TokenEmbedding
from .feedforward import ACTIVATIONS, FeedForward
from .kv_cache import KVCache
from .norms import LayerNorm, RMSNorm, make_norm
from .positions import (POSITIONAL, ROPE_SCALING, LearnedPositions, RotaryEmbedding,
                        SinusoidalPositions, alibi_bias, alibi_slopes, rope_inv_freq,
                        sinusoidal_table)
from .unpad import MIN_PADDING, Unpadded

__all__ = [
    "backend_settings",
    "ACTIVATIONS", "ATTENTION_BACKENDS", "AttentionOptions", "MIN_PADDING", "POSITIONAL",
    "ROPE_SCALING", "FeedForward",
    "KVCache", "LayerNorm", "LearnedPositions", "MultiHeadAttention", "RMSNorm", "RotaryEmbedding",
    "SinusoidalPositions", "TokenEmbedding", "TransformerBlock", "Unpadded", "alibi_bias",
    "alibi_slopes", "attention_forward", "causal_mask", "register_attention",
    "make_norm", "rope_inv_freq", "scaled_dot_product_attention", "sinusoidal_table",
]
