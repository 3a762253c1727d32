"""``lmforge classify``: label texts with a fine-tuned classifier
(:class:`lmforge.inference.Classifier`) and, given a labelled file, score it."""

from __future__ import annotations

import argparse

from ..data.labeled import LabelVocab, read_labeled
from ..errors import ConfigError
from ..evaluation import classification_metrics, format_confusion
from ..inference import Classifier
from ..tasks.image_predict import ImageClassifier
from ..viz.image_attention import plot_image_attention
from .arguments import labeled_data_arguments, labeled_data_options, non_negative_int
from .output import say, write_json
from .registry import Command


def classify(model_dir: str, texts: list[str] | None = None, data: str | None = None, *,
             fmt: str = "auto", text_column: str = "text", label_column: str = "label",
             text_pair_column: str | None = None, batch_size: int = 64, device: str = "cpu",
             show: int = 10) -> dict:
    """Predicted label and class probabilities per text; with a labelled ``data`` file also
    accuracy, macro-F1, the confusion matrix and the classification report."""
    if bool(texts) == bool(data):
        raise ConfigError("give texts (--text, repeatable) or a file (--data), not both")
    clf = Classifier.load(model_dir, device=device)
    rows = None
    if data:
        rows = read_labeled(data, fmt=fmt, text_column=text_column, label_column=label_column,
                            pair_column=text_pair_column, labels="optional")
        texts = rows.texts
    probs = clf.predict_proba(texts, rows.pairs if rows else None, batch_size)  # (N, K)
    pred = probs.argmax(-1)
    preds = [{"text": t, "label": clf.labels[k],
              "probabilities": {lab: round(float(p), 6) for lab, p in zip(clf.labels, pr)}}
             for t, k, pr in zip(texts, pred, probs)]
    _say_predictions(preds if data is None else preds[:show], len(preds), bool(data))
    result: dict = {"model_dir": str(model_dir), "labels": clf.labels, "predictions": preds}
    if rows is not None and rows.labels is not None:
        y = LabelVocab(clf.labels).encode(rows)  # unknown labels: file, row and column named
        m = classification_metrics(y, pred, clf.labels)
        result["metrics"] = m
        say(f"\n{data}: {m['n']} rows, accuracy {m['accuracy']:.4f}, "
            f"macro-F1 {m['macro_f1']:.4f}")
        say(format_confusion(m["confusion_matrix"], clf.labels))
        say("\n" + m["report"])
    return result


def classify_images(model_dir: str, images: list[str], attention: str | None = None) -> dict:
    """Label and class probabilities per image file; ``attention``: a PNG of the ViT's
    attention rollout and last-layer heads over the first image."""
    clf = ImageClassifier.load(model_dir)
    probs = clf.predict_proba(images)  # (N, K)
    preds = []
    for path, pr in zip(images, probs):
        k = int(pr.argmax())
        preds.append({"image": path, "label": clf.labels[k], "probabilities":
                      {lab: round(float(p), 6) for lab, p in zip(clf.labels, pr)}})
        say(f"{clf.labels[k]:<12} p={pr[k]:.3f}   {path}")
    result: dict = {"model_dir": str(model_dir), "labels": clf.labels, "predictions": preds}
    if attention:
        att = clf.attention(images[0])
        plot_image_attention(att["image"], att["rollout"], att["heads"], attention,
                             title=f"{preds[0]['label']} (p={max(probs[0]):.2f})")
        result["attention"] = attention
        say(f"attention rollout and heads of {images[0]} -> {attention}")
    return result


def _say_predictions(shown: list[dict], total: int, from_file: bool) -> None:
    for r in shown:
        dist = "  ".join(f"{lab}: {p:.3f}" for lab, p in r["probabilities"].items())
        text = r["text"] if len(r["text"]) <= 70 else r["text"][:67] + "..."
        say(f"{r['label']:<12} p={r['probabilities'][r['label']]:.3f}   [{dist}]   {text}")
    if from_file and total > len(shown):
        say(f"... {total - len(shown)} more rows (all of them: --json FILE)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", action="append", help="a text to classify (repeatable)")
    src.add_argument("--data", help="a file of texts (CSV, TSV, JSONL, .txt, 'label text' lines); "
                     "with labels the metrics are printed too")
    src.add_argument("--image", action="append", help="an image file to classify with an image "
                     "classifier (task = \"image-classify\"; repeatable)")
    p.add_argument("--attention", metavar="PNG", help="with --image and a ViT: draw the attention "
                   "rollout and the last layer's heads over the (first) image to this file")
    p.add_argument("--show", type=non_negative_int, default=10,
                   help="predictions to print for --data")
    labeled_data_arguments(p)


def run(args: argparse.Namespace) -> None:
    if args.image:
        write_json(classify_images(args.model_dir, args.image, args.attention), args.json)
        return
    if args.attention:
        raise ConfigError("--attention draws a ViT's attention: it needs --image")
    result = classify(args.model_dir, args.text, args.data,
                      text_pair_column=args.text_pair_column, show=args.show,
                      **labeled_data_options(args))
    write_json(result, args.json)


COMMANDS = [Command("classify", "label texts with a fine-tuned classifier (and score it on a "
                    "labelled file)", add_arguments, run)]
