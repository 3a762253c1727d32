"""The transformer backbone: token (+ position) embeddings, a stack of blocks, a final norm.

It returns hidden states (B, T, C); heads (language-model head, classifiers, ...) sit on top
and objectives turn their outputs into a loss. Assembled from ``lmforge.blocks`` by a
:class:`ModelConfig`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..blocks import (AttentionOptions, backend_settings, FeedForward, KVCache, LearnedPositions,
                      MultiHeadAttention, RotaryEmbedding, SinusoidalPositions, TokenEmbedding, TransformerBlock, alibi_bias,
                      Unpadded, alibi_slopes, make_norm, rope_inv_freq)
from ..blocks.relative import RelativeContext, XLMemory
from ..blocks.reversible import reversible_forward
from ..blocks.t5_bias import T5RelativeBias
from ..errors import ConfigError
from .config import ModelConfig


PLAIN_BACKENDS = ("auto", "fused", "explicit")
"""Backends that compute exact attention with no settings of their own: an encoder–decoder
uses the configured backend on its encoder and one of these on the decoder (``auto`` unless
``model.attention`` is one of them)."""


def build_block(cfg: ModelConfig, rope: RotaryEmbedding | None,
                cross_attention: bool = False) -> TransformerBlock:
    backend = cfg.attention
    if cross_attention and backend not in PLAIN_BACKENDS:
        backend = "auto"  # the seq2seq decoder: efficient variants are for the encoder side
    options = AttentionOptions(window=cfg.attention_window,
                               settings=backend_settings(backend, cfg.attention_options
                                                         if backend == cfg.attention else None))
    attn = lambda r: MultiHeadAttention(  # noqa: E731
        cfg.d_model, cfg.n_head, cfg.n_kv_head, bias=cfg.use_attn_bias, rope=r,
        backend=backend, dropout=cfg.dropout, head_dim=cfg.head_dim, options=options,
        context_length=cfg.context_length, relative=cfg.positional == "relative",
        qk_norm_eps=cfg.norm_eps if cfg.qk_norm else None)
    ff = FeedForward(cfg.d_model, cfg.ff_dim, cfg.activation, bias=cfg.use_ff_bias)
    norm = lambda: make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)  # noqa: E731
    cross = dict(cross_attn=attn(None), norm_cross=norm()) if cross_attention else {}
    return TransformerBlock(attn(rope), ff, norm(), norm(), prenorm=cfg.prenorm,
                            dropout=cfg.dropout, ff_chunks=cfg.ff_chunks, **cross)


class Transformer(nn.Module):
    """Transformer backbone configured by ``ModelConfig``: causal self-attention for
    ``arch = "decoder"``, bidirectional for ``arch = "encoder"``. An encoder–decoder builds
    two: a bidirectional encoder, and a causal decoder whose blocks also cross-attend to the
    encoder's output (``cross_attention``), sharing the encoder's ``embed`` when given."""

    def __init__(self, cfg: ModelConfig, *, causal: bool | None = None, n_layer: int | None = None,
                 cross_attention: bool = False, embed: TokenEmbedding | None = None,
                 vocab_size: int | None = None):
        super().__init__()
        self.cfg = cfg
        self.causal = cfg.causal if causal is None else causal
        self.embed = embed or TokenEmbedding(vocab_size or cfg.vocab_size, cfg.d_model,
                                             scale=cfg.scale_embeddings)
        self.pos = {"learned": LearnedPositions, "sinusoidal": SinusoidalPositions}.get(
            cfg.positional, lambda *a: None)(cfg.context_length, cfg.d_model)
        self.token_type = (TokenEmbedding(cfg.type_vocab_size, cfg.d_model)
                           if cfg.type_vocab_size else None)
        self.embed_norm = (make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)
                           if cfg.embed_norm else None)
        rope = None
        if cfg.positional == "rope":
            inv_freq = rope_inv_freq(cfg.dim_head, cfg.rope_theta, cfg.rope_scaling)  # (D/2,)
            rope = RotaryEmbedding(cfg.dim_head, cfg.context_length, inv_freq=inv_freq)
        if cfg.positional == "alibi":
            self.register_buffer("alibi", alibi_slopes(cfg.n_head), persistent=False)
        else:
            self.alibi = None
        self.rel_table, self.rel_u, self.rel_v = None, None, None
        if cfg.positional == "relative":  # Transformer-XL: R_{i-j}, and u, v shared by layers
            self.rel_table = SinusoidalPositions(cfg.context_length + cfg.memory_length, cfg.d_model)
            self.rel_u = nn.Parameter(torch.zeros(cfg.n_head, cfg.dim_head))
            self.rel_v = nn.Parameter(torch.zeros(cfg.n_head, cfg.dim_head))
        self.t5_bias = (T5RelativeBias(cfg.n_head, cfg.relative_buckets, cfg.relative_max_distance,
                                       bidirectional=not self.causal)
                        if cfg.positional == "t5_relative" else None)  # one table for all layers
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.layers = nn.ModuleList(build_block(cfg, rope, cross_attention)
                                    for _ in range(n_layer or cfg.n_layer))
        self.norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias) if cfg.prenorm else None
        self.unpad = True
        """Skip padding: with a ``padding_mask`` (and no KV cache), the blocks process only the
        real tokens (``lmforge.blocks.unpad``); padding positions of the output are zeros."""

    def forward(
        self,
        idx: torch.Tensor,  # (B, T) token ids
        *,
        positions: torch.Tensor | None = None,  # (T,) or (B, T); default past..past+T-1
        padding_mask: torch.Tensor | None = None,  # (B, past+T) bool, True = real token
        token_type_ids: torch.Tensor | None = None,  # (B, T) segment ids; default all 0
        cache: KVCache | None = None,
        attn_out: list | None = None,  # if given, each layer appends its (B, H, T, S) weights
        context: torch.Tensor | None = None,  # (B, S, C) encoder output, for cross-attention
        context_mask: torch.Tensor | None = None,  # (B, S) bool, True = real source token
        cross_out: list | None = None,  # if given, each layer appends its cross-attn weights
        memory: XLMemory | None = None,  # Transformer-XL: earlier segments, updated in place
    ) -> torch.Tensor:  # (B, T, C)
        B, T = idx.shape
        past = cache.length if cache is not None else 0
        if positions is None:
            positions = torch.arange(past, past + T, device=idx.device)  # (T,)
        x = self._embed(idx, positions, token_type_ids)  # (B, T, C)
        mask = padding_mask[:, None, None, :] if padding_mask is not None else None  # (B,1,1,S)
        unpad = None
        if (self.unpad and padding_mask is not None and cache is None and context is None
                and T > 1 and not torch.compiler.is_compiling()):
            unpad = Unpadded.from_mask(padding_mask)  # None if there is little padding
            if unpad is not None:
                x = unpad.pack(x)  # (N, C): blocks work on the real tokens only
        kw = dict(positions=positions, mask=mask, bias=self._score_bias(positions, past + T),
                  is_causal=self.causal, cache=cache, attn_out=attn_out, unpad=unpad)
        if context is not None:
            kw.update(context=context, cross_out=cross_out, context_mask=None
                      if context_mask is None else context_mask[:, None, None, :])  # (B,1,1,S)
        x = self._layers(x, kw, memory, padding_mask, cache, past + T)
        if cache is not None:
            cache.advance(T)
        x = self.norm(x) if self.norm is not None else x
        return unpad.pad(x) if unpad is not None else x  # (B, T, C), zeros at padding

    def _embed(self, idx, positions, token_type_ids) -> torch.Tensor:
        x = self.embed(idx)  # (B, T, C)
        if self.pos is not None:
            x = x + self.pos(positions)
        if self.token_type is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(idx)  # (B, T)
            x = x + self.token_type(token_type_ids)
        elif token_type_ids is not None:
            raise ConfigError("token_type_ids given, but this model has no token-type embeddings "
                              "(model.type_vocab_size = 0); leave them out")
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        return self.drop(x)

    def _score_bias(self, positions: torch.Tensor, n_keys: int) -> torch.Tensor | None:
        """ALiBi's or T5's additive score bias (H, T, n_keys), or None."""
        if self.alibi is None and self.t5_bias is None:
            return None
        q_pos = positions if positions.dim() == 1 else positions[0]
        if self.t5_bias is not None:
            return self.t5_bias(q_pos, torch.arange(n_keys, device=positions.device))
        bias = alibi_bias(self.alibi, q_pos, torch.arange(n_keys, device=positions.device))
        return bias if self.causal else -bias.abs()  # both directions: -slope * |q - k|

    def _relative(self, n_keys: int) -> RelativeContext:
        table = self.rel_table(torch.arange(n_keys, device=self.rel_u.device))  # (K, C)
        return RelativeContext(table, self.rel_u, self.rel_v)

    def _layers(self, x, kw: dict, memory: XLMemory | None, padding_mask, cache,
                n_keys: int) -> torch.Tensor:
        """Run the blocks: plain, reversible, or with an XL memory (which is then updated)."""
        if memory is not None:
            if self.rel_table is None:
                raise ConfigError("an XL memory needs model.positional = \"relative\"")
            if padding_mask is not None or cache is not None:
                raise ValueError("an XL memory runs without a padding mask or a KV cache")
            if memory.batch() not in (None, x.shape[0]):
                raise ValueError(f"the memory holds {memory.batch()} rows, the batch has "
                                 f"{x.shape[0]}; reset it (memory.reset()) for a new batch")
            if x.shape[1] > memory.room:
                raise ValueError(f"{x.shape[1]} tokens do not fit the memory's segment "
                                 f"({memory.room} positions left); feed at most that many")
            n_keys = memory.held + x.shape[1]
        if self.rel_table is not None:
            kw["relative"] = self._relative(n_keys)
        kws = [dict(kw, layer=i) for i in range(len(self.layers))]
        if self.cfg.reversible and "context" not in kw:
            return reversible_forward(self.layers, x, kws)
        inputs = []
        for layer, layer_kw in zip(self.layers, kws):
            if memory is not None:
                inputs.append(x)
                layer_kw["memory"] = memory.states(layer_kw["layer"])  # (B, M, C) or None
            x = layer(x, **layer_kw)
        if memory is not None:
            memory.push(inputs)
        return x


def check_arch(cfg, arch: str, who: str) -> None:
    """Refuse a config of another architecture, or without a vocabulary size."""
    if cfg.arch != arch:
        raise ConfigError(f"{who} needs model.arch = \"{arch}\", got {cfg.arch!r}")
    if cfg.vocab_size <= 0:
        raise ConfigError("model.vocab_size must be set (it is taken from the tokenizer)")


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Parameter count, tied weights counted once."""
    seen, n = set(), 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        n += p.numel()
    return n


def init_weights(model: nn.Module, std: float, n_layer: int, embed_std: float | None = None) -> None:
    """GPT-2 initialisation: N(0, std) for matrices and embeddings, zero biases, and residual
    output projections scaled by 1/sqrt(2 * n_layer). ``embed_std`` overrides the token
    embeddings' (the original Transformer: d_model ** -0.5, scaled by sqrt(d_model) in use, so
    tokens are as loud as the sinusoidal positions added to them)."""
    for name, p in model.named_parameters():
        if embed_std is not None and name.endswith("embed.weight"):
            nn.init.normal_(p, mean=0.0, std=embed_std)
        elif p.dim() >= 2:
            scale = 1 / math.sqrt(2 * n_layer) if name.endswith(("o_proj.weight", "down_proj.weight")) else 1.0
            nn.init.normal_(p, mean=0.0, std=std * scale)
        elif name.endswith("bias"):
            nn.init.zeros_(p)
