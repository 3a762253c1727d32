"""Image classification (``task = "image-classify"``; the ``[image_classify]`` table is
:class:`ImageClassifyConfig`, the images at ``data.path``; docs/baselines.md).

images (:mod:`lmforge.data.images`: a folder of class sub-folders, an ``.npz`` with x and y,
or ``sklearn:digits``) -> seeded train / val split -> ``model.arch = "vit"`` (Vision
Transformer) or ``"image_cnn"`` (small ResNet) with a classifier head -> the shared driver ->
the model directory (no tokenizer; meta.json's ``image_classifier`` holds the labels, the
image size and channels) -> val accuracy and macro-F1 in ``eval.json``.

1-D signals (an ``.npz`` with x (N, L), or (N, L, C) with ``image_classify.signal = true``;
``data.path = "mnist1d:"``) train the same way: the model config gets ``signal_length`` and
``model.arch`` = ``image_cnn`` / ``vit`` / ``rnn``/``lstm``/``gru`` builds the 1-D model of
:mod:`lmforge.models.signal`; ``mnist1d:`` validates on its standard test split.

Batches are a pure function of (seed, step, micro-step, rank) (seeded epochs, seeded random
shifts), so ``--resume`` is exact. ``lmforge classify MODEL_DIR --image PATH`` labels images
with the result (:mod:`lmforge.tasks.image_predict`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import from_dict, to_dict
from ..data import epoch_indices
from ..data.images import ImageSet, random_shift, read_images
from ..errors import ConfigError
from ..evaluation import quick_metrics
from ..files.atomic import atomic_write_text
from ..modeldir import save_model_dir, update_meta
from ..models import ModelConfig, build_model
from ..models.config import IMAGE_ARCHS, SIGNAL_ARCHS
from .classify import epochs_config
from .config import RunConfig
from .driver import RunState, train_task
from .registry import Task, TaskData, register
from .steps import TrainRun

META_KEY = "image_classifier"
EVAL_FILE = "eval.json"

__all__ = ["ImageClassifyConfig", "ImageClassifyTask", "image_logits", "image_loss",
           "image_model_config", "train_image_classifier"]


@dataclass
class ImageClassifyConfig:
    image_size: int = 0
    """Resize every image to image_size x image_size pixels; 0 = as stored (an .npz or
    sklearn:digits; a folder of files needs a size)."""
    channels: int = 0
    """1 = grayscale, 3 = RGB; 0 = as stored (a folder of files: RGB)."""
    val_fraction: float = 0.2
    """Share of the images held out (seeded) for validation."""
    train_fraction: float = 1.0
    """Train on a seeded sample of this share of the remaining images (learning curves)."""
    shift: int = 0
    """Augmentation: move each training image by up to this many pixels (0 = none)."""
    epochs: float = 0.0
    """> 0: sets train.max_steps to this many passes over the training images."""
    eval_batch_size: int = 256
    """Images per batch when evaluating."""
    signal: bool = False
    """Read the .npz's x shaped (N, L, C) as 1-D signals of L samples and C channels (an x
    of (N, L) and ``data.path = "mnist1d:"`` always are signals); false = (N, H, W) images."""

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"image_classify.val_fraction: must be in (0, 1), got {self.val_fraction}")
        if not 0.0 < self.train_fraction <= 1.0:
            raise ConfigError("image_classify.train_fraction: must be in (0, 1], got "
                              f"{self.train_fraction}")
        for name in ("image_size", "shift", "channels"):
            if getattr(self, name) < 0:
                raise ConfigError(f"image_classify.{name}: must be >= 0, got {getattr(self, name)}")
        if self.channels not in (0, 1, 3):
            raise ConfigError(f"image_classify.channels: 1 (grayscale), 3 (RGB) or 0 (as "
                              f"stored), got {self.channels}")
        if self.epochs < 0 or self.eval_batch_size < 1:
            raise ConfigError("image_classify.epochs must be >= 0 and eval_batch_size >= 1")


def image_loss(model, batch: dict) -> torch.Tensor:
    """Mean cross-entropy of the logits of ``batch["pixels"]`` (B, C, H, W) or (B, C, L)."""
    return F.cross_entropy(model(batch["pixels"]).float(), batch["labels"])


@torch.no_grad()
def image_logits(model, x: np.ndarray | torch.Tensor, batch_size: int = 256,
                 device="cpu") -> torch.Tensor:  # (N, K) on the CPU
    """Logits for all images (N, C, H, W) or signals (N, C, L), in eval mode, in batches."""
    was = model.training
    model.eval()
    x = torch.as_tensor(x)
    out = torch.cat([model(x[i:i + batch_size].to(device)).float().cpu()
                     for i in range(0, len(x), batch_size)])
    model.train(was)
    return out


def image_model_config(model: ModelConfig, data: ImageSet) -> ModelConfig:
    """``[model]`` with the classifier head and the image (or signal) shape of ``data``."""
    if data.is_signal:
        return _signal_model_config(model, data)
    if model.arch not in IMAGE_ARCHS:
        raise ConfigError(f"task = \"image-classify\" trains model.arch = "
                          f"{' or '.join(map(repr, IMAGE_ARCHS))}, got {model.arch!r}")
    d = to_dict(model)
    size = int(data.x.shape[-1])
    d.update(heads="classifier", n_classes=len(data.labels), image_size=size,
             image_channels=int(data.x.shape[1]), vocab_size=0)
    if model.arch == "vit":
        d["context_length"] = (size // model.patch_size) ** 2 + 1
    return from_dict(ModelConfig, d, "model")


def _signal_model_config(model: ModelConfig, data: ImageSet) -> ModelConfig:
    """``[model]`` for signals (N, C, L): the classifier head, ``signal_length`` = L."""
    if model.arch not in SIGNAL_ARCHS:
        raise ConfigError(f"{data.source} holds 1-D signals: model.arch = "
                          f"{' or '.join(map(repr, SIGNAL_ARCHS))}, got {model.arch!r}")
    d = to_dict(model)
    length = int(data.x.shape[-1])
    d.update(heads="classifier", n_classes=len(data.labels), image_size=0, signal_length=length,
             image_channels=int(data.x.shape[1]), vocab_size=0)
    if model.arch == "vit":
        if length % model.patch_size:
            raise ConfigError(f"model.patch_size: must divide the signal length ({length}), got "
                              f"{model.patch_size}")
        d["context_length"] = length // model.patch_size + 1
    return from_dict(ModelConfig, d, "model")


def batch_fn(train: ImageSet, batch_size: int, grad_accum: int, seed: int, shift: int, world):
    """(step, micro, rank) -> {"pixels", "labels"}: seeded epochs, seeded shifts."""
    x, y = torch.from_numpy(train.x), torch.from_numpy(train.y)

    def batch(step: int, micro: int, rank: int) -> dict:
        offset = ((step * grad_accum + micro) * world() + rank) * batch_size
        idx = torch.from_numpy(epoch_indices(len(y), batch_size, seed, offset))
        g = torch.Generator().manual_seed(hash((seed, step, micro, rank)) % 2**63)
        return {"pixels": random_shift(x[idx], shift, g), "labels": y[idx]}
    return batch


class ImageClassifyTask(Task):
    """``task = "image-classify"``; ``run.state`` holds the splits and the model config."""

    name = "image-classify"
    summary = ("classify images (ViT or a small ResNet) from a folder, an .npz or sklearn:digits; "
               "or 1-D signals (CNN, Transformer, RNN) from an .npz or mnist1d:")
    section, config = "image_classify", ImageClassifyConfig
    archs = SIGNAL_ARCHS  # (rnn/lstm/gru only on signals: image_model_config says so)

    def check(self, cfg: RunConfig) -> None:
        if not isinstance(cfg.data.path, str) or not cfg.data.path:
            raise ConfigError("data.path: task = \"image-classify\" reads one source: a folder of "
                              "class sub-folders, an .npz with x and y, \"sklearn:digits\" "
                              "or \"mnist1d:\"")

    def tokenizer(self, run: RunState):
        return None  # pixels in, classes out

    def fit_vocab(self, run: RunState) -> int:
        return 0

    def prepare(self, run: RunState) -> TaskData:
        cfg, ic, s = run.cfg, run.cfg.image_classify, run.state
        data = read_images(cfg.data.path, ic.image_size, ic.channels, ic.signal)
        train, val = data.split(ic.val_fraction, cfg.seed)
        if ic.train_fraction < 1.0:
            train, _ = train.split(1.0 - ic.train_fraction, cfg.seed + 1)
        s.update(data=data, train=train, val=val, mcfg=image_model_config(cfg.model, data))
        tc = epochs_config(cfg.train, ic.epochs, len(train.y))
        vy = torch.from_numpy(val.y)

        def evaluate(m) -> dict:
            return quick_metrics(image_logits(m, val.x, ic.eval_batch_size, run.trainer.device), vy)

        meta = {"path": data.source, "images": len(data.y), "train": len(train.y),
                "val": len(val.y), "labels": data.labels, "shape": list(data.x.shape[1:])}
        return TaskData(train_batch=batch_fn(train, tc.batch_size, tc.grad_accum, cfg.seed,
                                             ic.shift, lambda: run.world_size),
                        tokens_per_batch=tc.batch_size, evaluate=evaluate, meta=meta,
                        train_config=tc)

    def build_model(self, run: RunState):
        model = run.state["model"] = build_model(run.state["mcfg"])
        return model

    def make_objective(self, run: RunState):
        return image_loss

    def meta(self, run: RunState) -> dict:
        mcfg = run.state["mcfg"]
        info = {"labels": run.state["data"].labels, "image_size": mcfg.image_size,
                "channels": mcfg.image_channels}
        if mcfg.signal_length:
            info["signal_length"] = mcfg.signal_length
        return {"task": self.name, "tokenizer": None, "parameters": run.state["model"].num_params(),
                META_KEY: info}

    def save(self, run: RunState, model, meta) -> None:
        save_model_dir(run.out, model, None, meta)

    def finish(self, run: RunState, trainer, train_run: TrainRun) -> None:
        """Val accuracy and macro-F1 of the final weights: metrics, eval.json, meta.json."""
        s, ic = run.state, run.cfg.image_classify
        logits = image_logits(s["model"], s["val"].x, ic.eval_batch_size, trainer.device)
        m = quick_metrics(logits, torch.from_numpy(s["val"].y))
        counts = np.bincount(s["val"].y, minlength=len(s["data"].labels))
        result = {"val": {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                          "loss": m["loss"], "n": int(len(s["val"].y)),
                          "majority_baseline": float(counts.max() / counts.sum())}}
        train_run.metrics.update(val_accuracy=m["accuracy"], val_macro_f1=m["macro_f1"])
        train_run.report = (f"val: accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f} "
                            f"({result['val']['n']} images; majority class "
                            f"{result['val']['majority_baseline']:.4f})")
        atomic_write_text(Path(run.out) / EVAL_FILE, json.dumps(result, indent=2))
        update_meta(run.out, eval=result)


register(ImageClassifyTask())


def train_image_classifier(cfg: RunConfig, **kw) -> TrainRun:
    """:func:`~lmforge.tasks.train_task` with ``task = "image-classify"``."""
    cfg.task = ImageClassifyTask.name
    return train_task(cfg, **kw)

