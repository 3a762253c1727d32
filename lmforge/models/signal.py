"""Classifiers of 1-D signals (docs/baselines.md, "1-D signals and MNIST-1D").

A config with ``signal_length > 0`` (set by ``task = "image-classify"`` when the data are
signals) reads input (B, C, L): C = ``image_channels`` channels of L = ``signal_length``
samples. ``model.arch`` picks the model, as for images:

* ``image_cnn`` -> :class:`SignalCNN`, the plain conv net of the MNIST-1D paper (Greydanus,
  2020): ``n_layer`` layers of Conv1d(d_model filters, kernel 5, stride 2, padding 1) + ReLU,
  the last feature map flattened -> dropout + linear.
* ``vit`` -> :class:`SignalTransformer`: non-overlapping patches of ``patch_size`` samples,
  each projected to d_model (a Conv1d with kernel = stride = P, the same as unfold + Linear);
  optionally a stem of Conv1d + GELU layers first, one per width in ``conv_widths`` (stride 1,
  same length); a [CLS] token in front (``classifier_pooling = "cls"``, default) or the mean
  over patches (``"mean"``); positions ``learned`` (one trained vector per slot),
  ``sinusoidal`` (the fixed table, none on [CLS]), ``rope`` or ``none``; the encoder blocks of
  :mod:`lmforge.blocks`; final norm -> head.
* ``rnn``/``lstm``/``gru`` -> :class:`SignalRNN`: a linear projection of each time step's C
  channels to d_model -> the torch.nn layer stack (``bidirectional`` reads both ways) -> the
  top layer's final state(s) (``classifier_pooling`` ``cls``, default) or the mean / max over
  the time steps -> dropout + linear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..blocks import make_norm
from ..blocks.positions import RotaryEmbedding, rope_inv_freq, sinusoidal_table
from ..errors import ConfigError
from .classifier import ClassificationHead
from .cnn import require_classifier
from .config import ModelConfig
from .recurrent import recurrent_layer
from .transformer import build_block, count_params, init_weights

__all__ = ["SIGNAL_MODELS", "PatchEmbedding1d", "SignalCNN", "SignalRNN", "SignalTransformer",
           "cnn_lengths", "signal_kind", "signal_tokens"]

CNN_KERNEL, CNN_STRIDE, CNN_PADDING = 5, 2, 1


def cnn_lengths(length: int, n_layer: int) -> list[int]:
    """Lengths of the input and of each SignalCNN layer's output."""
    out = [length]
    for _ in range(n_layer):
        out.append((out[-1] + 2 * CNN_PADDING - CNN_KERNEL) // CNN_STRIDE + 1)
    return out


def signal_tokens(cfg: ModelConfig) -> int:
    """Tokens the SignalTransformer of ``cfg`` attends over: patches (+ 1 for [CLS])."""
    return cfg.signal_length // cfg.patch_size + (0 if cfg.classifier_pooling == "mean" else 1)


def _head(cfg: ModelConfig, width: int) -> ClassificationHead:
    dropout = cfg.dropout if cfg.classifier_dropout is None else cfg.classifier_dropout
    return ClassificationHead(width, cfg.n_classes, dropout)


class _SignalModel(nn.Module):
    """What every signal classifier shares: signals (B, C, L) -> logits (B, K)."""

    def forward(self, signals: torch.Tensor) -> torch.Tensor:  # (B, K)
        return self.head(self.features(signals))

    def tied_keys(self) -> set[str]:
        return set()

    def num_params(self, trainable_only: bool = False) -> int:
        return count_params(self, trainable_only)


class SignalCNN(_SignalModel):
    """``image_cnn`` on signals (see the module docstring)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        require_classifier(cfg)
        self.cfg = cfg
        lengths = cnn_lengths(cfg.signal_length, cfg.n_layer)
        if lengths[-1] < 1:
            raise ConfigError(f"model.n_layer: {cfg.n_layer} stride-2 conv layers shrink a "
                              f"signal of {cfg.signal_length} samples to nothing; use fewer")
        D = cfg.d_model
        self.convs = nn.ModuleList(
            nn.Conv1d(cfg.image_channels if i == 0 else D, D, CNN_KERNEL, CNN_STRIDE, CNN_PADDING,
                      bias=cfg.bias) for i in range(cfg.n_layer))
        self.head = _head(cfg, D * lengths[-1])

    def features(self, signals: torch.Tensor) -> torch.Tensor:  # (B, C, L) -> (B, D * L')
        h = signals
        for conv in self.convs:
            h = F.relu(conv(h))  # (B, D, L_i)
        return h.flatten(1)


class PatchEmbedding1d(nn.Module):
    """signals (B, C, L) -> patch embeddings (B, L / P, D)."""

    def __init__(self, channels: int, patch: int, dim: int):
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv1d(channels, dim, kernel_size=patch, stride=patch)

    def forward(self, signals: torch.Tensor) -> torch.Tensor:
        return self.proj(signals).transpose(1, 2)  # (B, D, N) -> (B, N, D)


def _conv_stem(cfg: ModelConfig) -> tuple[nn.Module, int]:
    """The optional Conv1d + GELU stem of ``conv_widths`` (odd widths keep the length) and
    the channels it hands to the patch embedding."""
    if not cfg.conv_widths:
        return nn.Identity(), cfg.image_channels
    layers, c = [], cfg.image_channels
    for w in cfg.conv_widths:
        layers += [nn.Conv1d(c, cfg.d_model, w, padding=w // 2, bias=cfg.bias), nn.GELU()]
        c = cfg.d_model
    return nn.Sequential(*layers), c


class SignalTransformer(_SignalModel):
    """``vit`` on signals (see the module docstring)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        require_classifier(cfg)
        if cfg.positional not in ("learned", "sinusoidal", "rope", "none"):
            raise ConfigError(f"model.positional: a signal Transformer takes learned, sinusoidal, "
                              f"rope or none, got {cfg.positional!r}")
        if cfg.conv_widths and any(w % 2 == 0 for w in cfg.conv_widths):
            raise ConfigError(f"model.conv_widths: the signal stem keeps the length only with odd "
                              f"widths, got {cfg.conv_widths}")
        self.cfg = cfg
        D, n_patch = cfg.d_model, cfg.signal_length // cfg.patch_size
        self.stem, c = _conv_stem(cfg)
        self.patch_embed = PatchEmbedding1d(c, cfg.patch_size, D)
        self.cls = nn.Parameter(torch.zeros(1, 1, D)) if (cfg.classifier_pooling or "cls") == "cls" \
            else None
        n_tok = n_patch + (self.cls is not None)
        self.pos_learned = nn.Parameter(torch.zeros(1, n_tok, D)) \
            if cfg.positional == "learned" else None
        table = torch.zeros(1, n_tok, D)
        if cfg.positional == "sinusoidal":
            table[0, n_tok - n_patch:] = sinusoidal_table(n_patch, D)
        self.register_buffer("pos", table, persistent=False)  # (1, N, D); zeros unless sinusoidal
        rope = RotaryEmbedding(cfg.dim_head, n_tok, inv_freq=rope_inv_freq(
            cfg.dim_head, cfg.rope_theta, cfg.rope_scaling)) if cfg.positional == "rope" else None
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.layers = nn.ModuleList(build_block(cfg, rope) for _ in range(cfg.n_layer))
        self.norm = make_norm(cfg.norm, D, cfg.norm_eps, cfg.bias)
        self.head = _head(cfg, D)
        init_weights(self, cfg.init_std, cfg.n_layer)
        for p in (self.cls, self.pos_learned):
            if p is not None:
                nn.init.normal_(p, std=cfg.init_std)

    def tokens(self, signals: torch.Tensor) -> torch.Tensor:  # (B, C, L) -> (B, N, D)
        x = self.patch_embed(self.stem(signals))  # (B, L/P, D)
        if self.cls is not None:
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1)
        x = x + self.pos
        return self.drop(x if self.pos_learned is None else x + self.pos_learned)

    def features(self, signals: torch.Tensor, attn_out: list | None = None) -> torch.Tensor:
        h = self.tokens(signals)  # (B, N, D)
        positions = torch.arange(h.shape[1], device=h.device)
        for block in self.layers:
            h = block(h, positions=positions, attn_out=attn_out)
        h = self.norm(h)
        return h[:, 0] if self.cls is not None else h.mean(1)  # (B, D)


class SignalRNN(_SignalModel):
    """``rnn``/``lstm``/``gru`` on signals (see the module docstring)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        require_classifier(cfg)
        self.cfg = cfg
        self.pooling = cfg.classifier_pooling or "cls"
        self.dirs = 2 if cfg.bidirectional else 1
        self.proj = nn.Linear(cfg.image_channels, cfg.d_model, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.rnn = recurrent_layer(cfg, cfg.bidirectional)
        self.head = _head(cfg, self.dirs * cfg.d_model)

    def features(self, signals: torch.Tensor) -> torch.Tensor:  # (B, C, L) -> (B, dirs*D)
        B = signals.shape[0]
        x = self.drop(self.proj(signals.transpose(1, 2)))  # (B, L, D)
        out, h = self.rnn(x)  # (B, L, dirs*D)
        if self.pooling == "mean":
            return out.mean(1)
        if self.pooling == "max":
            return out.amax(1)
        if isinstance(h, tuple):  # LSTM: (h_n, c_n)
            h = h[0]
        last = h.view(self.cfg.n_layer, self.dirs, B, -1)[-1]  # (dirs, B, D)
        return last.transpose(0, 1).reshape(B, -1)


SIGNAL_MODELS: dict[str, type[nn.Module]] = {"signal_cnn": SignalCNN, "signal_vit": SignalTransformer,
                                             "signal_rnn": SignalRNN}
"""The MODEL_CLASSES entries of the signal classifiers (:func:`signal_kind` picks one)."""


def signal_kind(cfg: ModelConfig) -> str | None:
    """The SIGNAL_MODELS key for a config on signals (``signal_length > 0``), else None."""
    if not cfg.signal_length:
        return None
    return {"image_cnn": "signal_cnn", "vit": "signal_vit"}.get(cfg.arch, "signal_rnn")
