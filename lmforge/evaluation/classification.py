"""Classification metrics (scikit-learn's functions): accuracy, macro-F1, per-class
precision/recall/F1, the confusion matrix and a text report."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def quick_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """loss (unweighted mean cross-entropy), accuracy and macro-F1: what evaluation during
    training logs and early stopping reads."""
    from sklearn.metrics import f1_score

    pred = logits.argmax(-1)
    return {"loss": float(F.cross_entropy(logits, labels)),
            "accuracy": float((pred == labels).float().mean()),
            "macro_f1": float(f1_score(labels.numpy(), pred.numpy(), average="macro",
                                       labels=list(range(logits.shape[1])), zero_division=0))}


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int],
                           labels: Sequence[str]) -> dict:
    """accuracy, macro_f1, per_class {label: precision, recall, f1, support},
    confusion_matrix (rows = true class, columns = predicted), report (text), n."""
    from sklearn.metrics import (accuracy_score, classification_report, confusion_matrix, f1_score,
                                 precision_recall_fscore_support)

    ids = list(range(len(labels)))
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=ids, average="macro", zero_division=0)),
        "per_class": {lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                            "support": int(s[i])} for i, lab in enumerate(labels)},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=ids).tolist(),
        "report": classification_report(y_true, y_pred, labels=ids, target_names=list(labels),
                                        digits=4, zero_division=0),
    }


def majority_baseline(y_true: Sequence[int], train_counts: Sequence[int]) -> float:
    """Accuracy of always predicting the most frequent training class."""
    y_true = np.asarray(y_true)
    return float((y_true == int(np.argmax(train_counts))).mean()) if len(y_true) else 0.0


def format_confusion(cm: Sequence[Sequence[int]], labels: Sequence[str]) -> str:
    """The confusion matrix as a text table (rows = true class, columns = predicted)."""
    names = [str(x) for x in labels]
    w = max([len("true \\ pred")] + [len(n) for n in names] + [len(str(v)) for r in cm for v in r])
    lines = ["true \\ pred".ljust(w) + "  " + "  ".join(n.rjust(w) for n in names)]
    lines += [n.ljust(w) + "  " + "  ".join(str(v).rjust(w) for v in row)
              for n, row in zip(names, cm)]
    return "\n".join(lines)
