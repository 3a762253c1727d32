"""Using a trained encoder: sentence embeddings, classifier features and predictions.

Every function runs over :class:`~lmforge.data.encode.EncodedTexts` in length-sorted batches
(little padding) and returns rows in the original order. :class:`Classifier` wraps a
classifier model directory (``lmforge train`` with ``task = "classify"``): its labels and the
max_len/truncation it was trained with come from ``meta.json`` (``"classifier"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..data.encode import EncodedTexts, encode_texts
from ..errors import ConfigError
from ..modeldir import load_model_dir
from ..modeldir.meta import ClassifierInfo, ModelMeta
from ..models import EncoderModel, SequenceClassifier, pool


@torch.no_grad()
def batched_rows(fn: Callable[[dict], torch.Tensor], enc: EncodedTexts, batch_size: int = 64,
                 device: str | torch.device = "cpu") -> torch.Tensor:
    """``fn(batch) -> (B, ...)`` over all rows of ``enc`` -> (N, ...) float32 on the CPU, in
    row order. Batches hold input_ids, token_type_ids, padding_mask on ``device``."""
    order, parts = [], []
    for idx in enc.eval_order(batch_size):
        batch = {k: v.to(device) for k, v in enc.batch(idx).items()}
        parts.append(fn(batch).float().cpu())
        order.extend(idx)
    stacked = torch.cat(parts)
    out = torch.empty_like(stacked)
    out[torch.as_tensor(order)] = stacked
    return out


def encoder_of(model: nn.Module) -> EncoderModel:
    """The :class:`EncoderModel` inside a MaskedLM / SequenceClassifier (or the model itself)."""
    enc = model if isinstance(model, EncoderModel) else getattr(model, "encoder", None)
    if not isinstance(enc, EncoderModel):
        raise ConfigError(f"{type(model).__name__} is not an encoder model (model.arch = "
                          "\"encoder\"); embeddings and classifiers need an encoder")
    return enc


def _types(encoder: EncoderModel, batch: dict) -> torch.Tensor | None:
    """Token types for models that have token-type embeddings; None for those that do not."""
    return batch["token_type_ids"] if encoder.cfg.type_vocab_size else None


@torch.no_grad()
def sentence_embeddings(model: nn.Module, enc: EncodedTexts, pooling: str = "mean",
                        normalize: bool = False, batch_size: int = 64,
                        device: str | torch.device = "cpu") -> torch.Tensor:  # (N, C)
    """One vector per text: :func:`~lmforge.models.pool` over the encoder's hidden states
    (``cls`` = the [CLS] state, ``mean``/``max`` over real tokens), L2-normalised on request."""
    encoder = encoder_of(model).eval()

    def fn(b: dict) -> torch.Tensor:  # (B, C)
        h = encoder(b["input_ids"], _types(encoder, b), b["padding_mask"])  # (B, T, C)
        return pool(h, b["padding_mask"], pooling)

    emb = batched_rows(fn, enc, batch_size, device)
    return torch.nn.functional.normalize(emb, dim=-1) if normalize else emb


@torch.no_grad()
def classifier_features(model: SequenceClassifier, enc: EncodedTexts, batch_size: int = 64,
                        device: str | torch.device = "cpu") -> torch.Tensor:  # (N, C)
    """What the classifier's head reads, for every row (cached for head-only training)."""
    was_training = model.training
    model.eval()
    out = batched_rows(lambda b: model.features(b["input_ids"], b["token_type_ids"],
                                                b["padding_mask"]), enc, batch_size, device)
    model.train(was_training)
    return out


@torch.no_grad()
def predict_logits(model: SequenceClassifier, enc: EncodedTexts, batch_size: int = 64,
                      device: str | torch.device = "cpu") -> torch.Tensor:  # (N, K)
    was_training = model.training
    model.eval()
    out = batched_rows(lambda b: model(b["input_ids"], b["token_type_ids"], b["padding_mask"]),
                       enc, batch_size, device)
    model.train(was_training)
    return out


@dataclass
class Classifier:
    """A fine-tuned classifier model directory, ready to label texts."""

    model: SequenceClassifier
    tokenizer: object
    labels: list[str]
    max_len: int
    truncation: str
    meta: ModelMeta
    path: Path | None = None
    device: str = "cpu"

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> "Classifier":
        lm = load_model_dir(path, device=device)
        if not isinstance(lm.model, SequenceClassifier):
            raise ConfigError(f"{path} holds a {type(lm.model).__name__}, not a classifier; "
                              "fine-tune one with `lmforge train` and task = \"classify\"")
        info = lm.meta.classifier or ClassifierInfo()
        n = lm.config.n_classes
        labels = [str(x) for x in info.labels] or [str(i) for i in range(n)]
        if len(labels) != n:
            raise ConfigError(f"{path}/meta.json lists {len(labels)} labels for a model with "
                              f"{n} classes")
        max_len = min(info.max_len or lm.config.context_length, lm.config.context_length)
        return cls(lm.model, lm.tokenizer, labels, max_len, info.truncation or "head",
                   lm.meta, lm.path, device)

    def encode(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> EncodedTexts:
        return encode_texts(self.tokenizer, texts, pairs, max_len=self.max_len,
                            truncation=self.truncation)

    def predict_proba(self, texts: Sequence[str], pairs: Sequence[str] | None = None,
                      batch_size: int = 64) -> np.ndarray:  # (N, K)
        logits = predict_logits(self.model, self.encode(texts, pairs), batch_size, self.device)
        return logits.softmax(-1).numpy()

    def predict(self, texts: Sequence[str], pairs: Sequence[str] | None = None,
                batch_size: int = 64) -> list[str]:
        return [self.labels[i] for i in self.predict_proba(texts, pairs, batch_size).argmax(-1)]
