"""Tokenizers: train (char, byte-level BPE, WordPiece, Unigram), save and load them."""

from .io import load_tokenizer, save_tokenizer
from .train import KINDS, default_special_tokens, eos_token_id, tokenizer_report, train_tokenizer

__all__ = [
    "KINDS",
    "default_special_tokens",
    "eos_token_id",
    "load_tokenizer",
    "save_tokenizer",
    "tokenizer_report",
    "train_tokenizer",
]
