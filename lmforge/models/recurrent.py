"""The recurrent predecessors of the Transformer, as lmforge models (docs/baselines.md).

``model.arch`` = ``rnn`` (Elman, tanh), ``lstm`` or ``gru``: ``d_model`` is both the
embedding width and the hidden size, ``n_layer`` the stacked layers (torch.nn layers, dropout
between them). With ``heads = "classifier"`` the model is a :class:`RecurrentClassifier`
that the text classification task trains like an encoder classifier; otherwise a
:class:`RecurrentLM` (next-token logits, like :class:`~lmforge.models.CausalLM`).

Padding never changes a result: the classifier packs each batch
(:func:`torch.nn.utils.rnn.pack_padded_sequence`), so a row is read over its real tokens only,
and pools over real positions. Right padding is assumed (what lmforge's batches produce).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .classifier import ClassificationHead, SequenceClassifier
from .config import RECURRENT_ARCHS, ModelConfig
from .heads import pool
from .transformer import count_params

__all__ = ["RecurrentClassifier", "RecurrentEncoder", "RecurrentLM", "recurrent_layer"]


def recurrent_layer(cfg: ModelConfig, bidirectional: bool = False) -> nn.RNNBase:
    """The torch.nn layer stack of ``cfg.arch`` (d_model -> d_model, n_layer layers)."""
    kw = dict(num_layers=cfg.n_layer, batch_first=True, bidirectional=bidirectional,
              dropout=cfg.dropout if cfg.n_layer > 1 else 0.0, bias=cfg.bias)
    if cfg.arch == "rnn":
        return nn.RNN(cfg.d_model, cfg.d_model, nonlinearity="tanh", **kw)
    cls = {"lstm": nn.LSTM, "gru": nn.GRU}[cfg.arch]
    return cls(cfg.d_model, cfg.d_model, **kw)


class RecurrentEncoder(nn.Module):
    """Token ids -> per-position outputs (B, T, dirs*C) and the final states (B, dirs*C),
    padding excluded (packed sequences)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.arch not in RECURRENT_ARCHS:
            raise ValueError(f"RecurrentEncoder builds {RECURRENT_ARCHS}, got {cfg.arch!r}")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        nn.init.normal_(self.embed.weight, std=cfg.init_std)
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.rnn = recurrent_layer(cfg, cfg.bidirectional)
        self.dirs = 2 if cfg.bidirectional else 1

    def forward(self, idx: torch.Tensor, padding_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        # idx: (B, T); padding_mask: (B, T) bool, True = real token (right padding)
        B, T = idx.shape
        x = self.drop(self.embed(idx))  # (B, T, C)
        if padding_mask is None:
            out, h = self.rnn(x)  # (B, T, dirs*C)
        else:
            lengths = padding_mask.sum(1).clamp(min=1).cpu()  # (B,)
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out, h = self.rnn(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)  # (B, T, dirs*C)
        if isinstance(h, tuple):  # LSTM: (h_n, c_n)
            h = h[0]
        # h: (layers*dirs, B, C) -> the top layer's final state of each direction
        last = h.view(self.cfg.n_layer, self.dirs, B, -1)[-1]  # (dirs, B, C)
        return out, last.transpose(0, 1).reshape(B, -1)  # (B, T, dirs*C), (B, dirs*C)


class RecurrentClassifier(SequenceClassifier):
    """An rnn/lstm/gru text classifier with the interface of
    :class:`~lmforge.models.SequenceClassifier` (so the classify task, ``lmforge classify``
    and the head-only mode use it unchanged): ``classifier_pooling`` ``cls`` (default) = the
    final states, ``mean``/``max`` over the outputs at real tokens."""

    def __init__(self, cfg: ModelConfig):
        nn.Module.__init__(self)
        self.cfg = cfg
        self.encoder = RecurrentEncoder(cfg)
        self.pooling = cfg.classifier_pooling or "cls"
        dropout = cfg.dropout if cfg.classifier_dropout is None else cfg.classifier_dropout
        self.head = ClassificationHead(self.encoder.dirs * cfg.d_model, cfg.n_classes, dropout)
        self.encoder_frozen = False

    def features(self, idx: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                 padding_mask: torch.Tensor | None = None) -> torch.Tensor:  # (B, dirs*C)
        out, last = self.encoder(idx, padding_mask)
        if self.pooling == "cls":
            return last
        return pool(out, padding_mask, self.pooling)


class RecurrentLM(nn.Module):
    """rnn/lstm/gru language model: idx (B, T) -> next-token logits (B, T, V), read left to
    right (unidirectional), the output projection tied to the embedding when
    ``tie_embeddings``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError("model.vocab_size must be set (it is taken from the tokenizer)")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        nn.init.normal_(self.embed.weight, std=cfg.init_std)
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.rnn = recurrent_layer(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight

    def forward(self, idx: torch.Tensor, *, state=None, return_state: bool = False,
                last_only: bool = False, **kw):
        """idx (B, T) -> logits (B, T, V), or (B, 1, V) with ``last_only``; ``state`` (what an
        earlier call returned: h, or (h, c) for an LSTM, each (n_layer, B, C)) continues from
        there instead of from zeros, and ``return_state`` returns (logits, state) for
        step-by-step generation (:mod:`lmforge.inference.recurrent`). Other keywords of the
        decoder's forward (``cache``, ...) are ignored: the state is this model's cache."""
        out, state = self.rnn(self.drop(self.embed(idx)), state)  # (B, T, C)
        if last_only:
            out = out[:, -1:]  # (B, 1, C)
        logits = self.lm_head(self.drop(out))  # (B, T, V)
        return (logits, state) if return_state else logits

    def tied_keys(self) -> set[str]:
        return {"lm_head.weight"} if self.cfg.tie_embeddings else set()

    def num_params(self, trainable_only: bool = False) -> int:
        return count_params(self, trainable_only)
