"""The Vision Transformer (Dosovitskiy et al., 2020): an image as a sequence of patches.

pixels (B, C, H, W) -> non-overlapping P x P patches, each flattened and projected to
d_model (a Conv2d with kernel = stride = P, which is the same as unfold + Linear) -> an
optional learned [CLS] token in front -> positions (``positional = "learned"``: one trained
vector per slot; ``"sinusoidal"``: the fixed 2-D sine/cosine table, half the width for the
patch row, half for the column, none on [CLS]) -> the encoder blocks of :mod:`lmforge.blocks`
(bidirectional) -> final norm -> the [CLS] state (``classifier_pooling = "cls"``, default) or
the mean over patches (``"mean"``) -> dropout + linear to ``n_classes`` logits.

``model(pixels, attn_out=[])`` appends each layer's attention weights (B, H, N, N) over the
N = [CLS] + patches tokens (for per-head maps and attention rollout).
"""

from __future__ import annotations

import torch
from torch import nn

from ..blocks import make_norm
from ..blocks.positions import sinusoidal_table
from .classifier import ClassificationHead
from .cnn import require_classifier
from .config import ModelConfig
from .transformer import build_block, count_params, init_weights

__all__ = ["PatchEmbedding", "VisionTransformer", "sincos_2d", "vit_tokens"]


def vit_tokens(cfg: ModelConfig) -> int:
    """Tokens the ViT of ``cfg`` attends over: patches (+ 1 for [CLS])."""
    n = (cfg.image_size // cfg.patch_size) ** 2
    return n + (0 if cfg.classifier_pooling == "mean" else 1)


def sincos_2d(grid: int, dim: int) -> torch.Tensor:  # (grid*grid, dim)
    """2-D sine/cosine positions of a grid x grid of patches in row-major order: the first
    dim // 2 features encode the row, the rest the column."""
    rows = sinusoidal_table(grid, dim // 2)  # (G, D/2)
    cols = sinusoidal_table(grid, dim - dim // 2)  # (G, D - D/2)
    r, c = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    return torch.cat([rows[r.flatten()], cols[c.flatten()]], -1)


class PatchEmbedding(nn.Module):
    """pixels (B, C, H, W) -> patch embeddings (B, N, D), N = (H/P) * (W/P) in row-major order."""

    def __init__(self, channels: int, patch: int, dim: int):
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(channels, dim, kernel_size=patch, stride=patch)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.proj(pixels).flatten(2).transpose(1, 2)  # (B, D, H/P, W/P) -> (B, N, D)


class VisionTransformer(nn.Module):
    """``model.arch = "vit"`` (see the module docstring)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        require_classifier(cfg)
        self.cfg = cfg
        D, grid = cfg.d_model, cfg.image_size // cfg.patch_size
        self.grid = grid
        self.pooling = cfg.classifier_pooling or "cls"
        self.patch_embed = PatchEmbedding(cfg.image_channels, cfg.patch_size, D)
        self.cls = nn.Parameter(torch.zeros(1, 1, D)) if self.pooling == "cls" else None
        n_tok = grid * grid + (self.cls is not None)
        if cfg.positional == "sinusoidal":
            table = sincos_2d(grid, D)
            if self.cls is not None:
                table = torch.cat([torch.zeros(1, D), table])
            self.register_buffer("pos", table[None], persistent=False)  # (1, N, D)
            self.pos_learned = None
        else:
            self.pos = None
            self.pos_learned = nn.Parameter(torch.zeros(1, n_tok, D))
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.layers = nn.ModuleList(build_block(cfg, None) for _ in range(cfg.n_layer))
        self.norm = make_norm(cfg.norm, D, cfg.norm_eps, cfg.bias)
        dropout = cfg.dropout if cfg.classifier_dropout is None else cfg.classifier_dropout
        self.head = ClassificationHead(D, cfg.n_classes, dropout)
        init_weights(self, cfg.init_std, cfg.n_layer)
        for p in (self.cls, self.pos_learned):
            if p is not None:
                nn.init.normal_(p, std=cfg.init_std)

    def tokens(self, pixels: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, N, D)
        x = self.patch_embed(pixels)  # (B, grid*grid, D)
        if self.cls is not None:
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1)
        return self.drop(x + (self.pos if self.pos is not None else self.pos_learned))

    def features(self, pixels: torch.Tensor, attn_out: list | None = None) -> torch.Tensor:
        h = self.tokens(pixels)  # (B, N, D)
        positions = torch.arange(h.shape[1], device=h.device)
        for block in self.layers:
            h = block(h, positions=positions, attn_out=attn_out)
        h = self.norm(h)
        return h[:, 0] if self.cls is not None else h.mean(1)  # (B, D)

    def forward(self, pixels: torch.Tensor, attn_out: list | None = None) -> torch.Tensor:
        return self.head(self.features(pixels, attn_out))  # (B, K)

    def tied_keys(self) -> set[str]:
        return set()

    def num_params(self, trainable_only: bool = False) -> int:
        return count_params(self, trainable_only)
