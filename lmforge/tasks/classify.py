"""Fine-tuning an encoder for sequence classification (``task = "classify"`` in the run
config; the ``[classify]`` table is :class:`~lmforge.training.ClassifyConfig`).

labelled files -> label vocabulary (from the training split) -> ``[CLS] text [SEP]`` ids (cut
to ``max_len``) -> :class:`~lmforge.models.SequenceClassifier` (the encoder of
``classify.init_from``, or a random one from ``[model]``) -> the shared :class:`Trainer` ->
model directory.

* ``mode = "full"`` trains every weight; ``"head-only"`` freezes the encoder and, with
  ``cache_features``, runs it once per example and trains the head on the stored features;
  ``"lora"`` freezes the encoder, adds low-rank adapters to ``lora_targets`` and trains them
  with the head (``"qlora"``: on block projections stored in 4-bit NF4). LoRA runs save the
  merged model directory (an ordinary classifier) and the adapter with the head in
  ``OUT_DIR/adapter``; their checkpoints hold only adapters, head and optimiser state.
* The dev split is evaluated every ``train.eval_every`` steps (loss, accuracy, macro-F1); the
  model directory keeps the weights of the best evaluation (``classify.metric``), and
  ``classify.patience`` evaluations without improvement stop training. Without a dev split
  the model directory holds the last weights.
* At the end the best weights are evaluated on dev and test: accuracy, macro-F1, per-class
  precision/recall/F1, the confusion matrix (``confusion_<split>.png``), scikit-learn's
  classification report, and the majority-class baseline; all of it goes to ``eval.json``,
  the figures to ``meta.json`` (``"eval"``).

Batches are a pure function of (seed, step, micro-step, rank) (seeded epochs), so ``--resume``
continues exactly, early-stopping state included.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ..config import to_dict
from ..data import epoch_indices
from ..data.encode import EncodedTexts, encode_texts
from ..data.labeled import LabeledData, LabelVocab, read_labeled
from ..errors import CheckpointError, ConfigError
from ..finetune import LoRAConfig, inject_lora, load_adapter, merged_copy, quantize_nf4, save_adapter
from ..finetune.checkpoint import AdapterTrainer
from ..evaluation import classification_metrics, format_confusion, majority_baseline, quick_metrics
from ..inference.encoder import classifier_features, predict_logits
from ..io import save_model_dir
from ..io.atomic import atomic_write_text
from ..io.model_dir import (check_vocab, load_tokenizer_file, read_config, read_meta, read_weights,
                            update_meta)
from ..models import SequenceClassifier, build_model
from ..objectives import class_weights, classification_loss
from ..tokenizers.train import BERT_SPECIAL_TOKENS
from ..training import EarlyStopping, ClassifyConfig, RunConfig, Trainer
from ..viz import plot_confusion_matrix
from .common import (TrainRun, finish, fit_vocab, machine, prepare_out_dir, run_tokenizer,
                     write_run_file)

EVAL_FILE = "eval.json"
ADAPTER_DIR = "adapter"
PEFT_MODES = ("lora", "qlora")


@dataclass
class ClassifySplits:
    train: LabeledData
    dev: LabeledData | None
    test: LabeledData | None
    vocab: LabelVocab
    dev_source: str  # "file", "held out from train" or "none"


def read_splits(cc: ClassifyConfig, seed: int) -> ClassifySplits:
    """The train/dev/test files of ``cc``, checked, sampled (limit/eval_limit), with the label
    vocabulary of the training split; unknown dev/test labels raise DataError."""
    if not cc.train:
        raise ConfigError("classify.train is empty: set it to a labelled file (CSV, TSV, JSONL or "
                          "'label text' lines), e.g. --set classify.train=data/train.csv")
    read = partial(read_labeled, fmt=cc.format, text_column=cc.text_column,
                   label_column=cc.label_column, pair_column=cc.text_pair_column or None)
    train = read(cc.train)
    dev, dev_source = None, "none"
    if cc.dev:
        dev, dev_source = read(cc.dev), "file"
    elif cc.dev_fraction > 0:
        train, dev = train.split(cc.dev_fraction, seed)
        dev_source = f"{cc.dev_fraction:g} of {cc.train} held out"
    vocab = LabelVocab.build(train, cc.labels or None)
    train = train.sample(cc.limit, seed)
    dev = dev.sample(cc.eval_limit, seed) if dev is not None else None
    test = read(cc.test).sample(cc.eval_limit, seed) if cc.test else None
    for split in (dev, test):
        if split is not None:
            vocab.encode(split)
    return ClassifySplits(train, dev, test, vocab, dev_source)


def resolve_pooling(pooling: str, init_meta: dict) -> str:
    """``auto`` -> the init model's sentence-embedding pooling (meta.json), else ``cls``."""
    if pooling != "auto":
        return pooling
    return (init_meta.get("sentence_embedding") or {}).get("pooling") or "cls"


def classifier_config(base, n_classes: int, pooling: str, dropout: float | None):
    """``base`` (an encoder ModelConfig) with a classification head."""
    if base.arch != "encoder":
        raise ConfigError(f"classification fine-tunes encoders (model.arch = \"encoder\"), got "
                          f"{base.arch!r}")
    return dataclasses.replace(base, heads="classifier", n_classes=n_classes,
                               classifier_pooling=pooling, classifier_dropout=dropout)


def init_classifier(src: str | Path, n_classes: int, pooling: str = "auto",
                    dropout: float | None = None) -> tuple[SequenceClassifier, object, dict]:
    """A classifier whose encoder is that of model directory ``src`` (a MaskedLM with any
    heads, or another classifier) and whose head is new: (model, tokenizer, src's meta)."""
    src = Path(src)
    cfg = read_config(src)
    tokenizer = load_tokenizer_file(src)
    check_vocab(tokenizer, cfg, str(src))
    meta = read_meta(src)
    try:
        cfg = classifier_config(cfg, n_classes, resolve_pooling(pooling, meta), dropout)
    except ConfigError as e:
        raise ConfigError(f"classify.init_from = {str(src)!r}: {e}") from None
    model = build_model(cfg)
    encoder = {k: v for k, v in read_weights(src).items() if k.startswith("encoder.")}
    missing, _ = model.load_state_dict(encoder, strict=False)
    missing = [k for k in missing if not k.startswith("head.")]
    if missing:
        raise CheckpointError(f"{src}: the encoder weights are incomplete: missing {missing[:5]}")
    return model, tokenizer, meta


def _random_classifier(cfg: RunConfig, out: Path, resume: bool, texts: list[str], n_classes: int,
                       pooling: str, dropout: float | None):
    """A freshly initialised classifier from ``[model]``, with the run's tokenizer (trained on
    the training texts, with BERT's special tokens, unless ``tokenizer.path`` is set)."""
    corpus = out / "tokenizer-texts.txt"
    if not (cfg.tokenizer.path or (resume and (out / "tokenizer.json").is_file())):
        corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
    try:
        tokenizer = run_tokenizer(cfg, out, resume, [str(corpus)], list(BERT_SPECIAL_TOKENS))
    finally:
        corpus.unlink(missing_ok=True)
    fit_vocab(cfg, tokenizer)
    mcfg = classifier_config(cfg.model, n_classes, "cls" if pooling == "auto" else pooling, dropout)
    return build_model(mcfg), tokenizer


@dataclass
class EncodedSplit:
    data: LabeledData
    enc: EncodedTexts
    y: np.ndarray  # (N,) class ids
    features: torch.Tensor | None = None  # (N, C) head inputs, head-only with cached features

    @torch.no_grad()
    def logits(self, model, batch_size: int, device) -> torch.Tensor:  # (N, K)
        if self.features is None:
            return predict_logits(model, self.enc, batch_size, device)
        head = model.head if isinstance(model, SequenceClassifier) else model
        was_training = head.training
        head.eval()
        out = torch.cat([head(f.to(device)).float().cpu() for f in self.features.split(batch_size)])
        head.train(was_training)
        return out


def _split_report(name: str, m: dict, labels: list[str]) -> str:
    return (f"{name} ({m['n']} rows): accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f} "
            f"(majority-class baseline {m['majority_baseline']:.4f})\n"
            f"{format_confusion(m['confusion_matrix'], labels)}\n\n{m['report']}")


def evaluate_splits(model: SequenceClassifier, parts: dict[str, EncodedSplit], labels: list[str],
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


def _run_meta(cfg: RunConfig, splits: ClassifySplits, parts: dict[str, EncodedSplit],
              model: SequenceClassifier, init_meta: dict, weights: torch.Tensor | None,
              peft: dict | None = None) -> dict:
    """meta.json of the classifier directory (training results are added as they come)."""
    cc, labels = cfg.classify, splits.vocab.labels
    data: dict = {name: {"path": p.data.path, "rows": len(p.y), "truncated": p.enc.n_truncated,
                         "class_counts": dict(zip(labels, splits.vocab.counts(p.y).tolist()))}
                  for name, p in parts.items()}
    data.update(dev_source=splits.dev_source, paths=sorted({p.data.path for p in parts.values()}))
    meta = {
        "task": "classify",
        "classifier": {"labels": labels, "max_len": cc.max_len, "truncation": cc.truncation,
                       "pooling": model.pooling, "mode": cc.mode, "format": cc.format,
                       "text_column": cc.text_column, "text_pair_column": cc.text_pair_column,
                       "label_column": cc.label_column},
        "init_from": {"path": cc.init_from, "task": init_meta.get("task"),
                      "source": init_meta.get("source")} if cc.init_from else None,
        "data": data,
        "class_weights": None if weights is None else weights.tolist(),
        "parameters": peft["base_params"] if peft else model.num_params(),
        "trainable_parameters": peft["trainable_params"] if peft else
        model.num_params(trainable_only=True),
        "run_config": to_dict(cfg),
        "machine": machine(),
    }
    meta["trainable_share"] = peft["trainable_share"] if peft else \
        meta["trainable_parameters"] / max(1, meta["parameters"])
    if peft:
        meta["lora"] = peft
    if cc.mode == "head-only" and "sentence_embedding" in init_meta:
        meta["sentence_embedding"] = init_meta["sentence_embedding"]  # the encoder is unchanged
    return meta


def add_adapters(model: SequenceClassifier, cc: ClassifyConfig) -> dict:
    """lora/qlora: quantise the encoder's block projections (qlora), wrap ``cc.lora_targets``
    in LoRA adapters and keep the head trainable. Returns the report for meta.json."""
    base_params = model.num_params()
    out: dict = {"mode": cc.mode, "rank": cc.lora_rank, "alpha": cc.lora_alpha,
                 "dropout": cc.lora_dropout, "targets": list(cc.lora_targets),
                 "modules_to_save": ["head"], "base_params": base_params}
    try:
        if cc.mode == "qlora":
            out["nf4_bytes_per_param"] = round(quantize_nf4(model).bytes_per_param, 4)
        report = inject_lora(model, LoRAConfig(rank=cc.lora_rank, alpha=cc.lora_alpha,
                                               dropout=cc.lora_dropout,
                                               targets=tuple(cc.lora_targets),
                                               modules_to_save=("head",)))
    except ConfigError as e:  # name the [classify] fields
        raise ConfigError(str(e).replace("lora.", "classify.lora_")
                          .replace("quantize_nf4:", "classify.mode = \"qlora\":")) from None
    adapters = report.trainable_params - model.head.proj.weight.numel() - \
        model.head.proj.bias.numel()
    out.update(layers=len(report.layers), adapter_params=adapters,
               trainable_params=report.trainable_params,
               trainable_share=report.trainable_share)
    return out


def train_classifier(cfg: RunConfig, *, resume: bool = False, overwrite: bool = False,
                     stop_at: int | None = None) -> TrainRun:
    """Fine-tune a classifier as ``cfg.classify`` says; returns the run with ``metrics``
    (dev_/test_ accuracy, macro_f1, majority = the majority-class baseline; best_step) and a
    printable ``report``."""
    cc = cfg.classify
    splits = read_splits(cc, cfg.seed)
    out = prepare_out_dir(cfg, resume, overwrite)
    labels, K = splits.vocab.labels, len(splits.vocab)
    torch.manual_seed(cfg.seed)
    init_meta: dict = {}
    if cc.init_from:
        model, tokenizer, init_meta = init_classifier(cc.init_from, K, cc.pooling, cc.dropout)
    else:
        model, tokenizer = _random_classifier(cfg, out, resume, splits.train.texts, K, cc.pooling,
                                              cc.dropout)
    if cc.max_len > model.cfg.context_length:
        raise ConfigError(f"classify.max_len ({cc.max_len}) is longer than the model's context "
                          f"({model.cfg.context_length}); lower it")
    encode = partial(encode_texts, tokenizer, max_len=cc.max_len, truncation=cc.truncation)
    parts = {name: EncodedSplit(d, encode(d.texts, d.pairs), splits.vocab.encode(d))
             for name, d in (("train", splits.train), ("dev", splits.dev), ("test", splits.test))
             if d is not None}
    train, dev = parts["train"], parts.get("dev")
    counts = splits.vocab.counts(train.y)
    weights = class_weights(cc.class_weights, counts, labels)
    B, tc = cfg.train.batch_size, cfg.train
    if cc.epochs:
        tc = dataclasses.replace(tc, max_steps=max(1, math.ceil(cc.epochs * len(train.y) /
                                                                (B * tc.grad_accum))))
    write_run_file(cfg, out)
    if cc.mode == "head-only":
        model.freeze_encoder()
    peft = add_adapters(model, cc) if cc.mode in PEFT_MODES else None
    cached = cc.mode == "head-only" and cc.cache_features
    meta_base = _run_meta(cfg, splits, parts, model, init_meta, weights, peft)

    def save(summary: dict) -> None:
        meta = {**meta_base, "training": summary}
        if peft is None:
            save_model_dir(out, model, tokenizer, meta)
            return
        # the merged model directory (what `lmforge classify` loads) and the adapter + head
        save_model_dir(out, merged_copy(model), tokenizer, {**meta, "adapter": ADAPTER_DIR})
        save_adapter(model, out / ADAPTER_DIR, meta={"classify": {
            "labels": labels, "init_from": cc.init_from, "mode": cc.mode, "training": summary}})

    def train_batch(step: int, micro: int, rank: int) -> dict:
        offset = ((step * tc.grad_accum + micro) * trainer.dist.world_size + rank) * B
        idx = epoch_indices(len(train.y), B, cfg.seed, offset)
        batch = {"features": train.features[idx]} if cached else train.enc.batch(idx)
        batch["labels"] = torch.from_numpy(train.y[idx])
        return batch

    def evaluate(m) -> dict:
        logits = dev.logits(m, cc.eval_batch_size, trainer.device)  # (N, K)
        return quick_metrics(logits, torch.from_numpy(dev.y))

    es = None
    if dev is not None:
        es = EarlyStopping(cc.metric, "min" if cc.metric == "loss" else "max", cc.patience)
    trainer = (AdapterTrainer if peft else Trainer)(
        model.head if cached else model, partial(classification_loss, class_weights=weights),
        train_batch=train_batch, cfg=tc, out_dir=out,
        tokens_per_batch=int(round(float(train.enc.lengths.mean()) * B)),
        evaluate_fn=evaluate if dev is not None else None, early_stopping=es,
        on_best=lambda m, summary: save(summary), on_save=None if dev is not None else
        (lambda m, summary: save(summary)))
    if cached:
        model.to(trainer.device)
        for p in parts.values():
            p.features = classifier_features(model, p.enc, cc.eval_batch_size, trainer.device)
    t0 = time.time()
    result = trainer.fit(resume=resume, stop_at=stop_at)
    plot = finish(trainer, result, out, t0)
    run = TrainRun(out, result, cfg, tokenizer, model, plot)
    if not trainer.dist.is_main or not (result.step == tc.max_steps or result.stopped_early):
        return run  # interrupted (stop_at): the checkpoint is the state to resume from
    if dev is not None and peft:  # the best evaluation's adapters and head, in memory
        load_adapter(model, out / ADAPTER_DIR)
    elif dev is not None:  # the model directory holds the best evaluation's weights
        model.load_state_dict(read_weights(out))
    else:
        save(trainer.summary())
    evals, run.report = evaluate_splits(model, parts, labels, counts, out, cc.eval_batch_size,
                                        trainer.device)
    for name, m in evals.items():
        run.metrics.update({f"{name}_accuracy": m["accuracy"], f"{name}_macro_f1": m["macro_f1"],
                            f"{name}_majority": m["majority_baseline"]})
    best = {"best_step": es.best_step, "metric": cc.metric, "best": es.best} if es else {}
    run.metrics.update({"best_step": es.best_step} if es else {})
    if peft:
        run.metrics.update(trainable_params=peft["trainable_params"],
                           trainable_share=peft["trainable_share"])
    atomic_write_text(out / EVAL_FILE, json.dumps({"labels": labels, **best, **evals}, indent=2))
    brief = {k: {f: v for f, v in m.items() if f != "report"} for k, m in evals.items()}
    update_meta(out, eval=brief, training={**trainer.summary(), **best})
    return run
