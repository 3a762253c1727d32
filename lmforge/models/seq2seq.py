"""Encoder–decoder Transformer ("Attention Is All You Need"; MarianMT): a bidirectional encoder
turns the source into contextual vectors, a causal decoder that also cross-attends to them
writes the target one token at a time, and a linear layer maps its states to the vocabulary.

Both stacks are the shared :class:`Transformer` backbone; the decoder's blocks carry a
cross-attention sublayer. With ``share_embeddings`` encoder and decoder read one token table
(a joint source/target vocabulary); with ``tie_embeddings`` the output projection is that table.
"""

from __future__ import annotations

import torch
from torch import nn

from ..blocks import KVCache
from ..errors import ConfigError
from .config import ModelConfig
from .transformer import Transformer, check_arch, count_params, init_weights


class Seq2SeqLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        check_arch(cfg, "seq2seq", "Seq2SeqLM")
        self.cfg = cfg
        self.encoder = Transformer(cfg, causal=False, n_layer=cfg.n_encoder_layer,
                                   vocab_size=cfg.source_vocab)
        self.decoder = Transformer(cfg, causal=True, cross_attention=True,
                                   embed=self.encoder.embed if cfg.share_embeddings else None)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=cfg.output_bias)
        init_weights(self, cfg.init_std, cfg.n_layer,
                     embed_std=cfg.d_model ** -0.5 if cfg.scale_embeddings else None)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.decoder.embed.weight

    def encode(
        self,
        src: torch.Tensor,  # (B, S) source token ids
        src_mask: torch.Tensor | None = None,  # (B, S) bool, True = real token
        attn_out: list | None = None,
    ) -> torch.Tensor:  # (B, S, C)
        if src.shape[1] > self.cfg.context_length:
            raise ConfigError(f"a source of {src.shape[1]} tokens does not fit the model's context "
                              f"of {self.cfg.context_length}; truncate it")
        return self.encoder(src, padding_mask=src_mask, attn_out=attn_out)

    def decode(
        self,
        tgt: torch.Tensor,  # (B, T) target ids so far, starting with the start token
        memory: torch.Tensor,  # (B, S, C) encoder output
        src_mask: torch.Tensor | None = None,  # (B, S) bool
        *,
        cache: KVCache | None = None,
        last_only: bool = False,
        cross_out: list | None = None,  # each layer appends its (B, H, T, S) cross-attention
        attn_out: list | None = None,
    ) -> torch.Tensor:  # (B, T, V) or (B, 1, V) with last_only
        h = self.decoder(tgt, cache=cache, context=memory, context_mask=src_mask,
                         cross_out=cross_out, attn_out=attn_out)  # (B, T, C)
        if last_only:
            h = h[:, -1:]
        return self.lm_head(h)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor,
                src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher forcing: logits (B, T, V) for every target position at once."""
        return self.decode(tgt, self.encode(src, src_mask), src_mask)

    def new_cache(self, batch: int, max_len: int | None = None, dtype=None, device=None) -> KVCache:
        """Decoder self-attention keys/values; cross-attention keys/values are filled once per
        source on the first decoding step and kept."""
        cfg, p = self.cfg, self.lm_head.weight
        return KVCache(cfg.n_layer, batch, cfg.n_kv_head or cfg.n_head,
                       max_len or cfg.context_length, cfg.dim_head,
                       dtype=dtype or p.dtype, device=device or p.device)

    def tied_keys(self) -> set[str]:
        """State-dict keys that alias another tensor (stored once in a model directory)."""
        keys = {"decoder.embed.weight"} if self.cfg.share_embeddings else set()
        if self.cfg.tie_embeddings:
            keys.add("lm_head.weight")
        return keys

    def num_params(self, trainable_only: bool = False) -> int:
        """Parameter count, tied weights counted once."""
        return count_params(self, trainable_only)
