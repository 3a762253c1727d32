"""Forecasters: a window of the past (B, L, C) in, the next ``horizon`` steps (B, H, C) out.

* ``patchtst`` (Nie et al. 2023, "A Time Series is Worth 64 Words"): channel-independent —
  each channel is its own sequence: cut into patches of ``patch_len`` steps every ``stride``
  steps, each patch linearly embedded, learned positions added, the encoder blocks of
  :mod:`lmforge.blocks` (bidirectional), and a flatten head from all patch vectors to the
  horizon. Weights are shared across channels, and no channel sees another.
* ``timestep``: a plain Transformer encoder over the context, one token per time step (all
  channels of a step projected in together), learned positions, a flatten head to H x C.
* ``lstm_forecaster``: :class:`torch.nn.LSTM` over the context; the last hidden state is
  projected to H x C.

All three optionally use RevIN (Kim et al. 2022): each input window is standardised per
channel by its own mean and std, and the forecast is mapped back (with a learned per-channel
affine). The shape of the problem lives in ``ModelConfig.forecast`` (:class:`ForecastShape`);
``context_length`` is the context; d_model, n_layer, n_head, d_ff, dropout... are the usual
model fields.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..blocks import (
    FeedForward,
    LearnedPositions,
    MultiHeadAttention,
    TransformerBlock,
    make_norm,
)
from ..errors import ConfigError
from .config import ModelConfig

FORECAST_ARCHS = ("patchtst", "timestep", "lstm_forecaster")


@dataclass(frozen=True)
class ForecastShape:
    """What a forecaster maps: ``context`` steps of ``channels`` values to ``horizon`` steps."""

    channels: int
    """Channels (value columns) in and out."""
    context: int
    """Input steps (``ModelConfig.context_length``)."""
    horizon: int
    """Steps forecast at once."""
    patch_len: int = 16
    """patchtst: steps per patch."""
    stride: int = 8
    """patchtst: steps between the starts of consecutive patches."""
    revin: bool = True
    """Standardise each input window per channel and undo it on the output."""

    @classmethod
    def of(cls, cfg: ModelConfig) -> ForecastShape:
        """The shape a forecaster's config describes (ConfigError naming the field if bad)."""
        f = dict(cfg.forecast or {})
        unknown = sorted(set(f) - {"channels", "horizon", "patch_len", "stride", "revin"})
        if unknown:
            raise ConfigError(f"model.forecast: unknown key {unknown[0]!r} (known: channels, "
                              "horizon, patch_len, stride, revin)")
        if "channels" not in f or "horizon" not in f:
            raise ConfigError("model.forecast needs channels and horizon (task = \"forecast\" "
                              "sets them from the data and the [forecast] table)")
        shape = cls(context=cfg.context_length, **f)
        for name in ("channels", "horizon", "patch_len", "stride"):
            v = getattr(shape, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 2**20:
                raise ConfigError(f"model.forecast.{name}: must be an integer from 1 to 2**20, got {v!r}")
        if cfg.arch == "patchtst" and shape.patch_len > shape.context:
            raise ConfigError(f"forecast.patch_len ({shape.patch_len}) is longer than the context "
                              f"({shape.context}); lower it")
        return shape

    def to_config(self) -> dict:
        """The ``ModelConfig.forecast`` table (the context lives in context_length)."""
        d = asdict(self)
        d.pop("context")
        return d

    @property
    def n_patches(self) -> int:
        """patchtst: patches per channel, (context - patch_len) // stride + 1."""
        return (self.context - self.patch_len) // self.stride + 1


class RevIN(nn.Module):
    """Reversible instance normalisation over the time axis, per sample and channel."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def norm(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        # x: (B, L, C) -> normalised (B, L, C), and (mean, std) each (B, 1, C)
        mean = x.mean(1, keepdim=True)
        std = (x.var(1, keepdim=True, unbiased=False) + self.eps).sqrt()
        return (x - mean) / std * self.weight + self.bias, (mean, std)

    def denorm(self, y: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        mean, std = stats  # y: (B, H, C)
        return (y - self.bias) / (self.weight + self.eps * self.eps) * std + mean


def encoder_blocks(cfg: ModelConfig) -> nn.ModuleList:
    """``n_layer`` bidirectional blocks of :mod:`lmforge.blocks` as ``cfg`` describes them."""
    def block() -> TransformerBlock:
        attn = MultiHeadAttention(cfg.d_model, cfg.n_head, cfg.n_kv_head, bias=cfg.use_attn_bias,
                                  dropout=cfg.dropout, head_dim=cfg.head_dim,
                                  backend=cfg.attention if cfg.attention in ("auto", "fused", "explicit")
                                  else "auto")
        ff = FeedForward(cfg.d_model, cfg.ff_dim, cfg.activation, bias=cfg.use_ff_bias)
        norm = lambda: make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)  # noqa: E731
        return TransformerBlock(attn, ff, norm(), norm(), prenorm=cfg.prenorm, dropout=cfg.dropout)
    return nn.ModuleList(block() for _ in range(cfg.n_layer))


class _Forecaster(nn.Module):
    """Shared: the config, the shape, RevIN around :meth:`_forward`, initialisation."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.shape = ForecastShape.of(cfg)
        self.revin = RevIN(self.shape.channels) if self.shape.revin else None

    def _init_linear(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=self.cfg.init_std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, L, C) scaled values -> (B, H, C) forecast
        _B, L, C = x.shape
        s = self.shape
        if L != s.context or C != s.channels:
            raise ValueError(f"expected (B, {s.context}, {s.channels}) inputs, got {tuple(x.shape)}")
        if self.revin is None:
            return self._forward(x)
        x, stats = self.revin.norm(x)
        return self.revin.denorm(self._forward(x), stats)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class PatchTST(_Forecaster):
    """Channel-independent patch Transformer (see the module docstring)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        s, D = self.shape, cfg.d_model
        self.patch_embed = nn.Linear(s.patch_len, D)
        self.pos = LearnedPositions(s.n_patches, D)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = encoder_blocks(cfg)
        self.norm = make_norm(cfg.norm, D, cfg.norm_eps, cfg.bias)
        self.head = nn.Linear(s.n_patches * D, s.horizon)
        self._init_linear()

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, L, C) -> (B*C, N, patch_len): each channel its own sequence of patches
        B, L, C = x.shape
        series = x.transpose(1, 2).reshape(B * C, L)  # (B*C, L)
        return series.unfold(-1, self.shape.patch_len, self.shape.stride)  # (B*C, N, P)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, L, C) -> (B*C, N, D) patch embeddings with positions
        p = self.patches(x)
        N = p.shape[1]
        return self.patch_embed(p) + self.pos(torch.arange(N, device=x.device))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _L, C = x.shape
        h = self.drop(self.embed(x))  # (B*C, N, D)
        for block in self.blocks:
            h = block(h)
        h = self.norm(h).flatten(1)  # (B*C, N*D)
        y = self.head(h)  # (B*C, H)
        return y.view(B, C, -1).transpose(1, 2)  # (B, H, C)


class TimestepTransformer(_Forecaster):
    """One token per time step: all channels of a step projected to d_model together."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        s, D = self.shape, cfg.d_model
        self.step_embed = nn.Linear(s.channels, D)
        self.pos = LearnedPositions(s.context, D)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = encoder_blocks(cfg)
        self.norm = make_norm(cfg.norm, D, cfg.norm_eps, cfg.bias)
        self.head = nn.Linear(s.context * D, s.horizon * s.channels)
        self._init_linear()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        h = self.drop(self.step_embed(x) + self.pos(torch.arange(L, device=x.device)))  # (B, L, D)
        for block in self.blocks:
            h = block(h)
        y = self.head(self.norm(h).flatten(1))  # (B, H*C)
        return y.view(B, self.shape.horizon, C)


class LSTMForecaster(_Forecaster):
    """:class:`torch.nn.LSTM` (d_model hidden units, n_layer layers) over the context; the last
    step's top-layer hidden state -> Linear -> (H, C)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        s = self.shape
        self.lstm = nn.LSTM(s.channels, cfg.d_model, num_layers=cfg.n_layer, batch_first=True,
                            dropout=cfg.dropout if cfg.n_layer > 1 else 0.0)
        self.head = nn.Linear(cfg.d_model, s.horizon * s.channels)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _L, C = x.shape
        out, _ = self.lstm(x)  # (B, L, d_model)
        return self.head(out[:, -1]).view(B, self.shape.horizon, C)


FORECASTERS: dict[str, type[nn.Module]] = {"patchtst": PatchTST, "timestep": TimestepTransformer,
                                           "lstm_forecaster": LSTMForecaster}
