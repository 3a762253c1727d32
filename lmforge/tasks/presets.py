"""Named starting points for `lmforge train --preset NAME` (a config file may override any
field). Sizes: ``tiny`` trains in seconds on a CPU; ``shakespeare-char`` is the tuned
10-minute CPU recipe; ``translation-small`` is a 3+3-layer encoder–decoder for Multi30k-sized
parallel corpora (set seq2seq.data_dir, src_lang, tgt_lang); ``gpt2-small`` is GPT-2's
124M-parameter shape."""

from __future__ import annotations

import copy

from ..errors import ConfigError

PRESETS: dict[str, dict] = {
    "tiny": {
        "model": {"d_model": 64, "n_layer": 2, "n_head": 4, "context_length": 64},
        "tokenizer": {"kind": "char"},
        "train": {"max_steps": 200, "batch_size": 16, "lr": 3e-3, "warmup_steps": 20,
                  "eval_every": 100, "checkpoint_every": 100, "eval_batches": 10},
    },
    "shakespeare-char": {
        "model": {"d_model": 192, "n_layer": 4, "n_head": 6, "context_length": 128,
                  "positional": "rope", "bias": False, "dropout": 0.0},
        "tokenizer": {"kind": "char"},
        "train": {"max_steps": 2000, "batch_size": 32, "lr": 2e-3, "min_lr": 1e-4,
                  "warmup_steps": 100, "eval_every": 250, "checkpoint_every": 500,
                  "eval_batches": 20, "weight_decay": 0.1},
    },
    "translation-small": {
        # a small encoder–decoder for sentence-level translation (Multi30k-sized corpora)
        "model": {"arch": "seq2seq", "d_model": 256, "n_layer": 3, "encoder_layers": 3,
                  "n_head": 4, "d_ff": 1024, "context_length": 128, "positional": "rope",
                  "activation": "gelu", "dropout": 0.1},
        "tokenizer": {"kind": "bpe", "vocab_size": 8000},
        "seq2seq": {"max_len": 100, "max_tokens": 4096, "label_smoothing": 0.1, "beam_size": 5,
                    "valid_split": "val", "test_split": "test_2016_flickr"},
        "train": {"max_steps": 2000, "lr": 1e-3, "min_lr": 1e-5, "warmup_steps": 300,
                  "weight_decay": 0.1, "beta2": 0.98, "eval_every": 250,
                  "checkpoint_every": 500},
    },
    "gpt2-small": {
        "model": {"d_model": 768, "n_layer": 12, "n_head": 12, "context_length": 1024,
                  "activation": "gelu_tanh", "positional": "learned", "dropout": 0.0},
        "tokenizer": {"kind": "bpe", "vocab_size": 50257},
        "train": {"batch_size": 8, "grad_accum": 8, "lr": 6e-4, "min_lr": 6e-5,
                  "warmup_steps": 2000, "max_steps": 600000, "weight_decay": 0.1,
                  "beta2": 0.95, "eval_every": 1000, "checkpoint_every": 1000},
    },
}


def preset_dict(name: str) -> dict:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name])
