"""Convolutional baselines (docs/baselines.md).

* ``model.arch = "text_cnn"`` (Kim, 2014): token embeddings (d_model wide) -> for each width
  in ``conv_widths`` d_model filters + ReLU -> max over time -> dropout + linear. A
  :class:`~lmforge.models.SequenceClassifier` for the text classification task. Padding never
  changes a result: padded embeddings are zeroed, each convolution is "full" (zero padding
  w - 1 on both sides, so a row shorter than a filter still has outputs) and the max runs over
  the ``length + w - 1`` outputs a row of that length has on its own.
* ``model.arch = "image_cnn"``: a small ResNet: a 3x3 stem (d_model channels), then
  ``n_layer`` stages of one residual basic block each (two 3x3 conv + BatchNorm, a 1x1
  projection on the skip when the shape changes), doubling the channels and halving the
  resolution from the second stage on; global average pooling -> linear. Input pixels
  (B, C, H, W).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .classifier import ClassificationHead, SequenceClassifier
from .config import ModelConfig
from .transformer import count_params

__all__ = ["BasicBlock", "ImageCNN", "TextCNN", "TextCNNClassifier", "require_classifier"]


def require_classifier(cfg: ModelConfig) -> None:
    """Refuse building a classifier-only arch without its classes."""
    if cfg.heads != "classifier" or not cfg.n_classes:
        raise ConfigError(f"model.arch = {cfg.arch!r} is a classifier: it needs heads = "
                          "\"classifier\" and n_classes (the classification tasks set both)")

DEFAULT_WIDTHS = [3, 4, 5]


class TextCNN(nn.Module):
    """Token ids (B, T) + padding mask -> max-over-time features (B, len(widths) * d_model)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.widths = list(cfg.conv_widths or DEFAULT_WIDTHS)
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        nn.init.normal_(self.embed.weight, std=cfg.init_std)
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.convs = nn.ModuleList(nn.Conv1d(cfg.d_model, cfg.d_model, w, padding=w - 1,
                                             bias=cfg.bias) for w in self.widths)

    def forward(self, idx: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T = idx.shape
        if padding_mask is None:
            padding_mask = torch.ones(B, T, dtype=torch.bool, device=idx.device)
        x = self.drop(self.embed(idx)) * padding_mask[..., None]  # (B, T, C), pads zeroed
        x = x.transpose(1, 2)  # (B, C, T)
        lengths = padding_mask.sum(1)  # (B,)
        feats = []
        for w, conv in zip(self.widths, self.convs):
            y = F.relu(conv(x))  # (B, C, T + w - 1)
            valid = torch.arange(T + w - 1, device=idx.device) < (lengths + w - 1)[:, None]
            feats.append(y.masked_fill(~valid[:, None, :], float("-inf")).amax(-1))  # (B, C)
        return torch.cat(feats, -1)  # (B, len(widths) * C)


class TextCNNClassifier(SequenceClassifier):
    """``text_cnn`` with the interface of :class:`~lmforge.models.SequenceClassifier` (the
    classify task and ``lmforge classify`` use it unchanged)."""

    def __init__(self, cfg: ModelConfig):
        nn.Module.__init__(self)
        require_classifier(cfg)
        self.cfg = cfg
        self.encoder = TextCNN(cfg)
        self.pooling = "max"
        dropout = cfg.dropout if cfg.classifier_dropout is None else cfg.classifier_dropout
        self.head = ClassificationHead(len(self.encoder.widths) * cfg.d_model, cfg.n_classes,
                                       dropout)
        self.encoder_frozen = False

    def features(self, idx: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                 padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder(idx, padding_mask)


class BasicBlock(nn.Module):
    """ResNet's basic block: relu(bn(conv(relu(bn(conv(x))))) + skip(x))."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, C_out, H', W')
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.skip(x))


class ImageCNN(nn.Module):
    """``image_cnn``: pixels (B, C, H, W) -> class logits (B, K) (see the module docstring)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        require_classifier(cfg)
        self.cfg = cfg
        D = cfg.d_model
        self.stem = nn.Sequential(nn.Conv2d(cfg.image_channels, D, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(D), nn.ReLU())
        chans = [D * 2 ** min(i, 3) for i in range(cfg.n_layer)]
        self.stages = nn.Sequential(*(BasicBlock(chans[i - 1] if i else D, c, 1 if i == 0 else 2)
                                      for i, c in enumerate(chans)))
        dropout = cfg.dropout if cfg.classifier_dropout is None else cfg.classifier_dropout
        self.head = ClassificationHead(chans[-1], cfg.n_classes, dropout)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C')
        return self.stages(self.stem(pixels)).mean((2, 3))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:  # (B, K)
        return self.head(self.features(pixels))

    def tied_keys(self) -> set[str]:
        return set()

    def num_params(self, trainable_only: bool = False) -> int:
        return count_params(self, trainable_only)
