"""A toy decoder small enough that every number of its forward pass fits on a screen: one
layer, one head, d_model 4, a vocabulary of the text's own characters (``lmforge explain
--tiny``)."""

from __future__ import annotations

import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers

from ..errors import DataError
from ..models import CausalLM, ModelConfig

TINY_TEXT = "abca"
"""The default text of ``--tiny``."""
MAX_CHARS = 8
"""Longest text (and largest vocabulary) the toy model takes."""


def char_tokenizer(chars: str) -> Tokenizer:
    """A tokenizer with one token per character of ``chars`` (in sorted order), every other
    character read as ``?``."""
    vocab = {c: i for i, c in enumerate(sorted(set(chars) - {"?"}))}
    vocab["?"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="?"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return tok


def tiny_model(text: str = TINY_TEXT, seed: int = 0) -> tuple[CausalLM, Tokenizer]:
    """The toy decoder (random weights from ``seed``, std 0.5 so the numbers are not all
    near zero) and a character tokenizer for the characters of ``text``."""
    if not text:
        raise DataError("--text is empty; give a few characters (--tiny uses 'abca' by default)")
    if len(text) > MAX_CHARS:
        raise DataError(f"--tiny takes a text of at most {MAX_CHARS} characters so that every "
                        f"number fits on screen; got {len(text)}")
    tok = char_tokenizer(text)
    cfg = ModelConfig(arch="decoder", vocab_size=tok.get_vocab_size(), context_length=MAX_CHARS,
                      d_model=4, n_layer=1, n_head=1, d_ff=8, activation="relu",
                      positional="sinusoidal", attention="explicit", init_std=0.5)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CausalLM(cfg).eval()
    return model, tok
