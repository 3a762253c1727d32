"""The typed model config: every architecture in lmforge is one of these, serialised to
``config.json`` in a model directory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError


@dataclass
class ModelConfig:
    arch: Literal["decoder"] = "decoder"
    """Which model to assemble: ``decoder`` = causal language model (GPT, Llama)."""
    vocab_size: int = 0
    """Output/input vocabulary; 0 = take it from the tokenizer."""
    context_length: int = 256
    """Longest sequence (in tokens) the model attends over."""
    d_model: int = 384
    """Width of the residual stream (embedding size)."""
    n_layer: int = 6
    n_head: int = 6
    n_kv_head: int | None = None
    """Key/value heads: None = n_head (multi-head); fewer = grouped-query; 1 = multi-query."""
    head_dim: int | None = None
    """Per-head width; None = d_model / n_head."""
    d_ff: int | None = None
    """Feed-forward width; None = 4 * d_model (8/3 * d_model rounded up to 64 for swiglu)."""
    activation: Literal["relu", "gelu", "gelu_tanh", "silu", "swiglu"] = "gelu"
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    norm_eps: float = 1e-5
    prenorm: bool = True
    """True: x + f(norm(x)) (GPT-2, Llama). False: norm(x + f(x)) (original Transformer)."""
    positional: Literal["learned", "sinusoidal", "rope", "alibi", "none"] = "learned"
    rope_theta: float = 10000.0
    bias: bool = True
    """Biases in the linear layers and LayerNorms."""
    tie_embeddings: bool = True
    """Share the token embedding matrix with the output projection."""
    dropout: float = 0.0
    """Dropout on embeddings, attention weights and residual branches (training only)."""
    attention: Literal["fused", "explicit"] = "fused"
    """Attention backend: torch's fused SDPA kernel, or the explicit formula."""
    init_std: float = 0.02

    def __post_init__(self) -> None:
        def bad(field: str, why: str) -> ConfigError:
            return ConfigError(f"model.{field}: {why}")

        for name in ("context_length", "d_model", "n_layer", "n_head"):
            if getattr(self, name) <= 0:
                raise bad(name, f"must be positive, got {getattr(self, name)}")
        if self.vocab_size < 0:
            raise bad("vocab_size", "must be >= 0 (0 = take it from the tokenizer)")
        if self.head_dim is None and self.d_model % self.n_head:
            raise bad("n_head", f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        if self.n_kv_head is not None and (self.n_kv_head <= 0 or self.n_head % self.n_kv_head):
            raise bad("n_kv_head", f"must divide n_head ({self.n_head}), got {self.n_kv_head}")
        if self.positional == "rope" and self.dim_head % 2:
            raise bad("positional", "rope needs an even head dimension")
        if not 0.0 <= self.dropout < 1.0:
            raise bad("dropout", f"must be in [0, 1), got {self.dropout}")

    @property
    def dim_head(self) -> int:
        return self.head_dim or self.d_model // self.n_head

    @property
    def ff_dim(self) -> int:
        if self.d_ff:
            return self.d_ff
        if self.activation == "swiglu":
            return -(-int(8 * self.d_model / 3) // 64) * 64
        return 4 * self.d_model
