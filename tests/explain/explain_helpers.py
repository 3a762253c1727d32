"""Tiny model directories (decoder, encoder, encoder–decoder) with a character tokenizer,
saved as lmforge saves them, for the explain and attention tests."""

from __future__ import annotations

import torch

from lmforge.explain.tiny import char_tokenizer
from lmforge.modeldir import save_model_dir
from lmforge.models import ModelConfig, build_model

CHARS = "abcdefgh "

CONFIGS = {
    "decoder": dict(arch="decoder", n_layer=2, n_head=2, positional="rope", norm="rmsnorm",
                    activation="swiglu", d_ff=16),
    "encoder": dict(arch="encoder", n_layer=2, n_head=2, prenorm=False, type_vocab_size=2,
                    embed_norm=True, heads="mlm"),
    "seq2seq": dict(arch="seq2seq", n_layer=2, n_head=2, encoder_layers=2,
                    positional="sinusoidal", scale_embeddings=True),
}


def tokenizer():
    """Characters a-h and space, ``?`` for the rest, and the encoder–decoder's specials."""
    tok = char_tokenizer(CHARS)
    tok.add_special_tokens(["<pad>", "<s>", "</s>"])
    return tok


def tiny(kind: str, seed: int = 0):
    tok = tokenizer()
    cfg = ModelConfig(vocab_size=tok.get_vocab_size(), context_length=32, d_model=16,
                      init_std=0.3, **CONFIGS[kind])
    torch.manual_seed(seed)
    return build_model(cfg).eval(), tok


def save_all(root):
    """{kind: path} of the tiny models saved under ``root``."""
    return {kind: save_model_dir(root / kind, *tiny(kind)) for kind in CONFIGS}
