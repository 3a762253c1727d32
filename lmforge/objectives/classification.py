"""Sequence classification: (weighted) cross-entropy of class logits against labels.

A batch is a dict: ``input_ids``, ``token_type_ids`` (B, T), ``padding_mask`` (B, T) bool and
``labels`` (B,) int64, or ``features`` (B, C) instead of the token tensors when a head is
trained on cached encoder outputs (head-only fine-tuning).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError


def classifier_logits(model: nn.Module, batch: dict) -> torch.Tensor:  # (B, K)
    """Logits of a :class:`~lmforge.models.SequenceClassifier` (token batch) or of its
    :class:`~lmforge.models.ClassificationHead` (``features`` batch)."""
    if "features" in batch:
        return model(batch["features"])
    return model(batch["input_ids"], batch.get("token_type_ids"), batch.get("padding_mask"))


def classification_loss(model: nn.Module, batch: dict,
                        class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy; with ``class_weights`` (K,) each example counts ``w[label]`` times
    (the mean is over the weights: sum_i w[y_i] * nll_i / sum_i w[y_i])."""
    logits = classifier_logits(model, batch).float()  # (B, K)
    w = None if class_weights is None else class_weights.to(logits.device, torch.float32)
    return F.cross_entropy(logits, batch["labels"], weight=w)


def class_weights(spec: str | Sequence[float] | dict[str, float], counts: np.ndarray,
                  labels: Sequence[str]) -> torch.Tensor | None:
    """Per-class loss weights (K,) from a spec: ``"none"`` (None), ``"balanced"`` (n / (K *
    count_k), as scikit-learn), a list in class order, or a table {label: weight} (unlisted
    classes 1). ``counts`` (K,): training examples per class."""
    k = len(labels)
    if isinstance(spec, str):
        if spec == "none":
            return None
        if spec != "balanced":
            raise ConfigError(f"class_weights {spec!r}: use \"none\", \"balanced\", a list of "
                              f"{k} numbers or a table {{label = weight}}")
        counts = np.asarray(counts, dtype=np.float64)
        return torch.tensor(counts.sum() / (k * np.maximum(counts, 1)), dtype=torch.float32)
    if isinstance(spec, dict):
        unknown = [lab for lab in spec if lab not in labels]
        if unknown:
            raise ConfigError(f"class_weights names label {unknown[0]!r}, which is not one of "
                              f"the classes ({', '.join(labels)})")
        values = [float(spec.get(lab, 1.0)) for lab in labels]
    else:
        values = [float(v) for v in spec]
        if len(values) != k:
            raise ConfigError(f"class_weights has {len(values)} numbers for {k} classes "
                              f"({', '.join(labels)}); give one per class, in that order")
    if any(not v > 0 for v in values):
        raise ConfigError(f"class_weights must be positive, got {values}")
    return torch.tensor(values, dtype=torch.float32)
