"""Using an image classifier model directory (``task = "image-classify"``): labels and class
probabilities for image files, and for a ViT its attention over the patches — per layer and
head, and the attention rollout (Abnar & Zuidema, 2020): the product over layers of
0.5 * (A + I) with A the head-averaged attention, rows renormalised; its [CLS] row (or the
mean row, for mean pooling) is how much each patch reached the classifier.

A classifier of 1-D signals (``signal_length`` in its config) reads one signal per file
instead: a ``.npy``, or an ``.npz`` with ``x``, shaped (L,) or (L, C)
(:func:`~lmforge.data.images.load_signal`); it has no attention maps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.images import load_image, load_signal
from ..errors import ConfigError
from ..modeldir.directory import check_weights_fit, load_state, read_config, read_meta, skip_init
from ..models import VisionTransformer, build_model
from ..models.config import IMAGE_ARCHS, SIGNAL_ARCHS
from .image_classify import META_KEY, image_logits

__all__ = ["ImageClassifier", "attention_rollout"]


def attention_rollout(weights: list[torch.Tensor]) -> torch.Tensor:
    """Per-layer attention (B, H, N, N) -> rollout (B, N, N): prod_l norm(0.5 * (mean_h A_l + I))."""
    out = None
    for w in weights:
        a = w.float().mean(1)  # (B, N, N)
        a = 0.5 * (a + torch.eye(a.shape[-1]))
        a = a / a.sum(-1, keepdim=True)
        out = a if out is None else a @ out
    return out


@dataclass
class ImageClassifier:
    """An image (or 1-D signal) classifier model directory, ready to label files."""

    model: torch.nn.Module
    labels: list[str]
    image_size: int
    channels: int
    path: Path
    signal_length: int = 0
    """> 0: a classifier of 1-D signals of this many samples (files hold one signal each)."""

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> "ImageClassifier":
        path = Path(path)
        cfg = read_config(path)
        if cfg.arch not in (SIGNAL_ARCHS if cfg.signal_length else IMAGE_ARCHS):
            raise ConfigError(f"{path} holds a model.arch = {cfg.arch!r} model, not an image "
                              "classifier; for texts use --text / --data")
        info = read_meta(path).extra.get(META_KEY) or {}
        labels = [str(x) for x in info.get("labels", [])] or [str(i) for i in range(cfg.n_classes)]
        check_weights_fit(path, cfg)
        with skip_init():
            model = build_model(cfg)
        load_state(path, model)
        return cls(model.to(device).eval(), labels, cfg.image_size, cfg.image_channels, path,
                   cfg.signal_length)

    def pixels(self, paths: list[str]) -> torch.Tensor:  # (N, C, H, W), or (N, C, L) signals
        if self.signal_length:
            return torch.from_numpy(np.stack([load_signal(p, self.signal_length, self.channels)
                                              for p in paths]))
        return torch.from_numpy(np.stack([load_image(p, self.image_size, self.channels)
                                          for p in paths]))

    def predict_proba(self, paths: list[str]) -> np.ndarray:  # (N, K)
        return image_logits(self.model, self.pixels(paths)).softmax(-1).numpy()

    @torch.no_grad()
    def attention(self, path: str) -> dict:
        """One image's attention: ``layers`` (L, H, N, N) weights, ``rollout`` (grid, grid)
        over the patches, ``heads`` (H, grid, grid): the last layer's [CLS] (or mean) row per
        head, and the image (C, S, S)."""
        if self.signal_length or not isinstance(self.model, VisionTransformer):
            raise ConfigError(f"{self.path}: attention maps need a ViT (model.arch = \"vit\"), "
                              f"this is {self.model.cfg.arch!r}")
        x = self.pixels([path])
        weights: list[torch.Tensor] = []
        self.model(x, attn_out=weights)
        m, g = self.model, self.model.grid
        first = 1 if m.cls is not None else 0
        roll = attention_rollout(weights)[0]  # (N, N)
        row = roll[0, first:] if first else roll.mean(0)
        last = weights[-1][0].float()  # (H, N, N)
        heads = last[:, 0, first:] if first else last.mean(1)
        return {"layers": torch.stack([w[0] for w in weights]), "image": x[0].numpy(),
                "rollout": row.reshape(g, g).numpy(), "heads": heads.reshape(-1, g, g).numpy()}
