"""The end of a ``task = "classify"`` run (:mod:`lmforge.tasks.classify`): the best weights
evaluated on dev and test — accuracy, macro-F1, per-class precision/recall/F1, the confusion
matrix (``confusion_<split>.png``), scikit-learn's report, the majority-class baseline — into
``eval.json``, meta.json (``"eval"``), the run's metrics and its printable report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..evaluation import classification_metrics, format_confusion, majority_baseline
from ..files.atomic import atomic_write_text
from ..modeldir.directory import update_meta
from ..viz import plot_confusion_matrix
from .classify_data import EncodedSplit

EVAL_FILE = "eval.json"


def _split_report(name: str, m: dict, labels: list[str]) -> str:
    return (f"{name} ({m['n']} rows): accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f} "
            f"(majority-class baseline {m['majority_baseline']:.4f})\n"
            f"{format_confusion(m['confusion_matrix'], labels)}\n\n{m['report']}")


def evaluate_splits(model, parts: dict[str, EncodedSplit], labels: list[str],
                    train_counts: np.ndarray, out: Path, batch_size: int,
                    device) -> tuple[dict, str]:
    """Full metrics of the dev and test splits (those present), their confusion-matrix PNGs
    in ``out``, and the printable report: ({split: metrics}, report)."""
    evals, reports = {}, []
    for name in ("dev", "test"):
        if name not in parts:
            continue
        p = parts[name]
        pred = p.logits(model, batch_size, device).argmax(-1).numpy()  # (N,)
        m = classification_metrics(p.y, pred, labels)
        m["majority_baseline"] = majority_baseline(p.y, train_counts)
        evals[name] = m
        plot_confusion_matrix(m["confusion_matrix"], labels, out / f"confusion_{name}.png",
                              title=f"{out.name}: {name} (accuracy {m['accuracy']:.3f})")
        reports.append(_split_report(name, m, labels))
    return evals, "\n".join(reports)


def split_metrics(evals: dict) -> dict:
    """The run's metrics of each evaluated split: <split>_accuracy, _macro_f1, _majority."""
    out = {}
    for name, m in evals.items():
        out.update({f"{name}_accuracy": m["accuracy"], f"{name}_macro_f1": m["macro_f1"],
                    f"{name}_majority": m["majority_baseline"]})
    return out


def write_eval(out: Path, labels: list[str], evals: dict, best: dict, summary: dict) -> None:
    """``eval.json`` (everything) and meta.json's ``eval`` (without the text reports) and
    ``training`` (the trainer's summary with the best evaluation, ``best``)."""
    atomic_write_text(out / EVAL_FILE, json.dumps({"labels": labels, **best, **evals}, indent=2))
    brief = {k: {f: v for f, v in m.items() if f != "report"} for k, m in evals.items()}
    update_meta(out, eval=brief, training={**summary, **best})
