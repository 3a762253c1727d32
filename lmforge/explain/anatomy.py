"""Where the parts of a model are: its backbone (the stack of blocks), the head that turns
hidden states into token logits, and, for an encoder–decoder, its decoder. The explain tools
recompute a forward pass from these modules and watch them with hooks, so they work on every
model lmforge builds without changing any of its ``forward`` methods."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError, DataError
from ..models import (
    CausalLM,
    EncoderModel,
    MaskedLM,
    Seq2SeqLM,
    SequenceClassifier,
    Transformer,
)

EXACT_BACKENDS = ("auto", "fused", "explicit", "sliding_window")
"""Attention backends computing exact softmax attention (the ones explain can recompute)."""


@dataclass
class Parts:
    """The pieces of one model the explain tools look at."""

    kind: str
    """``decoder``, ``encoder`` or ``seq2seq``."""
    backbone: Transformer
    """The stack walked through: the decoder's, the encoder's, or (seq2seq) the encoder's."""
    head: Callable[[torch.Tensor], torch.Tensor] | None
    """Final hidden states (..., C) -> token logits (..., V); None for a model without one
    (a bare encoder, a classifier). For seq2seq it reads the decoder's states."""
    decoder: Transformer | None = None
    """seq2seq: the decoder stack (cross-attends to the encoder's output)."""


def model_parts(model: nn.Module) -> Parts:
    """The :class:`Parts` of a model lmforge builds (``load_model_dir(...).model``)."""
    if isinstance(model, CausalLM):
        return Parts("decoder", model.backbone, model.lm_head)
    if isinstance(model, MaskedLM):
        return Parts("encoder", model.encoder.backbone, model.mlm)
    if isinstance(model, SequenceClassifier):
        return Parts("encoder", model.encoder.backbone, None)
    if isinstance(model, EncoderModel):
        return Parts("encoder", model.backbone, None)
    if isinstance(model, Seq2SeqLM):
        return Parts("seq2seq", model.encoder, model.lm_head, model.decoder)
    raise ConfigError(f"cannot explain a {type(model).__name__}; explain reads lmforge decoders, "
                      "encoders and encoder–decoders (a model directory)")


def check_exact(cfg) -> None:
    """Refuse a model whose attention is approximated (Linformer, ...): its weights are not a
    softmax over every key, so there is no exact attention matrix to show."""
    if cfg.attention not in EXACT_BACKENDS:
        raise ConfigError(f"model.attention = {cfg.attention!r} approximates attention; explain "
                          f"and attention show exact attention ({', '.join(EXACT_BACKENDS)})")


def encode_text(tokenizer, text: str, context: int, what: str = "--text") -> tuple[list[int], list[str]]:
    """Token ids and token strings of ``text`` (no special tokens added), refusing empty text
    and text longer than the model's context."""
    if not text or not text.strip():
        raise DataError(f"{what} is empty; give some text to run through the model")
    enc = tokenizer.encode(text, add_special_tokens=False)
    if not enc.ids:
        raise DataError(f"{what} {text!r} gives no tokens with this tokenizer; try other text")
    if len(enc.ids) > context:
        raise DataError(f"{what} has {len(enc.ids)} tokens, more than the model's context of "
                        f"{context}; give a shorter text")
    return list(enc.ids), token_names(tokenizer, enc.ids)


def token_names(tokenizer, ids) -> list[str]:
    """The token string of each id (its number when the tokenizer has no string for it)."""
    return [tokenizer.id_to_token(int(i)) or str(int(i)) for i in ids]


class Capture:
    """Records what named submodules receive and return during one forward pass.

    ``with Capture({"q": attn.q_proj}) as cap: model(ids)`` then ``cap.inputs["q"]`` (the first
    positional argument) and ``cap.outputs["q"]``; only a module's first call is kept."""

    def __init__(self, modules: dict[str, nn.Module]):
        self.modules = modules
        self.inputs: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles: list = []

    def _hooks(self, name: str):
        def pre(module, args):
            if args and name not in self.inputs:
                self.inputs[name] = args[0].detach().clone()

        def post(module, args, out):
            if name not in self.outputs and isinstance(out, torch.Tensor):
                self.outputs[name] = out.detach().clone()
        return pre, post

    def __enter__(self) -> Capture:
        for name, m in self.modules.items():
            pre, post = self._hooks(name)
            self._handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


@contextmanager
def head_switched_off(attn: nn.Module, head: int):
    """Inside the block, head ``head`` of the attention module ``attn`` contributes nothing:
    its slice of the concatenated head outputs is zeroed just before ``o_proj``."""
    if not 0 <= head < attn.n_head:
        raise ConfigError(f"head {head} does not exist; this layer has heads 0..{attn.n_head - 1}")
    d = attn.head_dim

    def zero(module, args):
        y = args[0].clone()  # (B, T, H*D)
        y[..., head * d:(head + 1) * d] = 0
        return (y,) + tuple(args[1:])

    handle = attn.o_proj.register_forward_pre_hook(zero)
    try:
        yield
    finally:
        handle.remove()


def reference_pass(model: nn.Module, parts: Parts, idx: torch.Tensor, attn_out: list):
    """Run ``idx`` (1, T) through the model itself (its own ``forward``), each layer of the
    stack that :class:`Parts` names appending its attention weights to ``attn_out``; returns the
    token logits (1, T, V), or None for a model without a token head (and for seq2seq, whose
    stack here is the encoder)."""
    if parts.kind == "decoder":
        return model(idx, attn_out=attn_out)
    if parts.kind == "seq2seq":
        model.encode(idx, attn_out=attn_out)
        return None
    if isinstance(model, MaskedLM):
        return model(idx, attn_out=attn_out).mlm_logits
    encoder = model if isinstance(model, EncoderModel) else model.encoder
    encoder(idx, attn_out=attn_out)
    return None
