"""Fine-tuning an encoder for sequence classification (``task = "classify"`` in the run
config; the ``[classify]`` table is :class:`~lmforge.tasks.classify_config.ClassifyConfig`).

labelled files -> label vocabulary (from the training split) -> ``[CLS] text [SEP]`` ids (cut
to ``max_len``) -> :class:`~lmforge.models.SequenceClassifier` (the encoder of
``classify.init_from``, or a random one from ``[model]``) -> the shared driver
(:func:`~lmforge.tasks.driver.train_task`) -> model directory.

* ``mode = "full"`` trains every weight; ``"head-only"`` freezes the encoder and, with
  ``cache_features``, runs it once per example and trains the head on the stored features;
  ``"lora"`` freezes the encoder, adds low-rank adapters (``[classify.lora]``) and trains them
  with the head (``"qlora"``: on block projections stored in 4-bit NF4). LoRA runs save the
  merged model directory (an ordinary classifier) and the adapter with the head in
  ``OUT_DIR/adapter``; their checkpoints hold only adapters, head and optimiser state.
* The dev split is evaluated every ``train.eval_every`` steps (loss, accuracy, macro-F1); the
  model directory keeps the weights of the best evaluation (``classify.metric``), and
  ``classify.patience`` evaluations without improvement stop training. Without a dev split
  the model directory holds the last weights.
* At the end the best weights are evaluated on dev and test (:mod:`.classify_eval`):
  accuracy, macro-F1, per-class precision/recall/F1, the confusion matrix
  (``confusion_<split>.png``), scikit-learn's classification report, and the majority-class
  baseline; all of it goes to ``eval.json``, the figures to ``meta.json`` (``"eval"``).

Batches are a pure function of (seed, step, micro-step, rank) (seeded epochs), so ``--resume``
continues exactly, early-stopping state included. The splits and encoding live in
:mod:`.classify_data`, the model (init, adapters) in :mod:`.classify_model`.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial

import torch

from ..errors import ConfigError
from ..evaluation import quick_metrics
from ..finetune import load_adapter, merged_copy, save_adapter
from ..finetune.checkpoint import AdapterTrainer
from ..inference.encoder import classifier_features
from ..modeldir import save_model_dir
from ..modeldir.directory import read_weights
from ..models import build_model
from ..objectives import class_weights, classification_loss
from ..tokenizers.special import BERT_SPECIAL_TOKENS
from ..training import EarlyStopping, Trainer, TrainConfig
from .classify_config import ClassifyConfig
from .classify_data import (ClassifySplits, EncodedSplit, batch_fn, classifier_meta, data_meta,
                            encode_splits, read_splits, require_train)
from .classify_eval import EVAL_FILE, evaluate_splits, split_metrics, write_eval
from .classify_model import (PEFT_MODES, add_adapters, check_encoder, classifier_config,
                             init_classifier, init_config, load_encoder, read_init,
                             resolve_pooling)
from .config import RunConfig
from .driver import RunState, train_task
from .registry import Task, TaskData, register
from .steps import TrainRun, fit_vocab, run_tokenizer

ADAPTER_DIR = "adapter"

__all__ = ["ADAPTER_DIR", "EVAL_FILE", "PEFT_MODES", "ClassifyConfig", "ClassifySplits",
           "ClassifyTask", "EncodedSplit", "add_adapters", "classifier_config", "epochs_config",
           "evaluate_splits", "init_classifier", "read_splits", "resolve_pooling",
           "train_classifier"]


def epochs_config(tc: TrainConfig, epochs: float, n_rows: int) -> TrainConfig:
    """``tc`` with ``max_steps`` = ``epochs`` passes over ``n_rows`` training rows
    (``classify.epochs``; 0 = ``tc`` as it is). A copy: run.toml records the config as given."""
    if not epochs:
        return tc
    steps = math.ceil(epochs * n_rows / (tc.batch_size * tc.grad_accum))
    return dataclasses.replace(tc, max_steps=max(1, steps))


class ClassifyTask(Task):
    """``task = "classify"``: the steps of its own; ``run.state`` carries the splits, the init
    model's config and meta, the encoded splits, the class weights and the built model."""

    name = "classify"
    summary = "fine-tune an encoder classifier (full, head-only, LoRA, QLoRA)"
    section, config = "classify", ClassifyConfig
    archs = ()  # [model] is read only without classify.init_from: check() asks for an encoder

    def check(self, cfg: RunConfig) -> None:
        require_train(cfg.classify)
        if not cfg.classify.init_from:
            check_encoder(cfg.model)

    def tokenizer(self, run: RunState):
        """The init model's tokenizer with ``classify.init_from``; else the run's own, trained on
        the training texts with BERT's special tokens (unless ``tokenizer.path`` is set; the
        saved one on resume). Reads the splits first (``run.state["splits"]``)."""
        cfg, cc, out = run.cfg, run.cfg.classify, run.out
        splits = run.state["splits"] = read_splits(cc, cfg.seed)
        if cc.init_from:
            init_cfg, tokenizer, init_meta = read_init(cc.init_from)
            run.state["init"] = (init_cfg, init_meta)
            return tokenizer
        corpus = out / "tokenizer-texts.txt"
        if not (cfg.tokenizer.path or (run.resume and (out / "tokenizer.json").is_file())):
            corpus.write_text("\n".join(splits.train.texts) + "\n", encoding="utf-8")
        try:
            return run_tokenizer(cfg, out, run.resume, [str(corpus)], list(BERT_SPECIAL_TOKENS))
        finally:
            corpus.unlink(missing_ok=True)

    def fit_vocab(self, run: RunState) -> int:
        """``[model]``'s vocabulary from the tokenizer; with ``classify.init_from`` the init
        model's config is used as it is (its tokenizer was checked against it)."""
        if run.cfg.classify.init_from:
            return run.tokenizer.get_vocab_size(with_added_tokens=True)
        return fit_vocab(run.cfg, run.tokenizer)

    def _model_config(self, run: RunState):
        """The classifier's config: the init model's encoder or ``[model]``, with the head."""
        cc, K = run.cfg.classify, len(run.state["splits"].vocab)
        if cc.init_from:
            init_cfg, init_meta = run.state["init"]
            return init_config(cc.init_from, init_cfg, init_meta, K, cc.pooling, cc.dropout)
        pooling = "cls" if cc.pooling == "auto" else cc.pooling
        return classifier_config(run.cfg.model, K, pooling, cc.dropout)

    def prepare(self, run: RunState) -> TaskData:
        """The encoded splits, class weights, train config (``classify.epochs``), batches,
        the dev evaluation and early stopping."""
        cfg, cc, s = run.cfg, run.cfg.classify, run.state
        mcfg = s["mcfg"] = self._model_config(run)
        if cc.max_len > mcfg.context_length:
            raise ConfigError(f"classify.max_len ({cc.max_len}) is longer than the model's context "
                              f"({mcfg.context_length}); lower it")
        parts = s["parts"] = encode_splits(s["splits"], run.tokenizer, cc)
        train, dev = parts["train"], parts.get("dev")
        s["counts"] = s["splits"].vocab.counts(train.y)
        s["weights"] = class_weights(cc.class_weights, s["counts"], s["splits"].vocab.labels)
        tc = epochs_config(cfg.train, cc.epochs, len(train.y))
        cached = cc.mode == "head-only" and cc.cache_features
        options = {}
        if dev is not None:
            options["early_stopping"] = EarlyStopping(
                cc.metric, "min" if cc.metric == "loss" else "max", cc.patience)

        def evaluate(m) -> dict:
            logits = dev.logits(m, cc.eval_batch_size, run.trainer.device)  # (N, K)
            return quick_metrics(logits, torch.from_numpy(dev.y))

        return TaskData(
            train_batch=batch_fn(train, tc.batch_size, tc.grad_accum, cfg.seed, cached,
                                 lambda: run.world_size),
            tokens_per_batch=int(round(float(train.enc.lengths.mean()) * tc.batch_size)),
            evaluate=evaluate if dev is not None else None, meta=data_meta(s["splits"], parts),
            trainer_options=options, train_config=tc)

    def build_model(self, run: RunState):
        """The classifier (encoder weights of ``classify.init_from`` when set), its encoder
        frozen (head-only) or given adapters (lora/qlora)."""
        cc = run.cfg.classify
        mcfg = run.state["mcfg"]
        model = load_encoder(cc.init_from, mcfg) if cc.init_from else build_model(mcfg)
        if cc.mode == "head-only":
            model.freeze_encoder()
        run.state["peft"] = add_adapters(model, cc) if cc.mode in PEFT_MODES else None
        run.state["model"] = model
        return model

    def make_objective(self, run: RunState):
        return partial(classification_loss, class_weights=run.state["weights"])

    def meta(self, run: RunState) -> dict:
        s = run.state
        init_meta = s["init"][1] if "init" in s else None
        meta = classifier_meta(run.cfg, s["splits"].vocab.labels, s["model"], init_meta,
                               s["weights"], s["peft"])
        if run.cfg.classify.init_from:  # the init model's tokenizer, not one from [tokenizer]
            meta["tokenizer"] = {"path": run.cfg.classify.init_from, "vocab_size": run.vocab}
        return meta

    def save(self, run: RunState, model, meta) -> None:
        """The model directory; lora/qlora: the merged classifier (what `lmforge classify`
        loads) and the adapter with the head in ``OUT_DIR/adapter``. Always the whole
        classifier (the trainer's model is the head alone with cached features)."""
        cc, peft, model = run.cfg.classify, run.state["peft"], run.state["model"]
        if peft is None:
            save_model_dir(run.out, model, run.tokenizer, meta)
            return
        save_model_dir(run.out, merged_copy(model), run.tokenizer, meta.with_fields(adapter=ADAPTER_DIR))
        save_adapter(model, run.out / ADAPTER_DIR, meta={"classify": {
            "labels": run.state["splits"].vocab.labels, "init_from": cc.init_from,
            "mode": cc.mode, "training": meta.training}})

    def make_trainer(self, run: RunState, model, data: TaskData, on_save):
        """AdapterTrainer for lora/qlora; the head alone for head-only with cached features
        (computed here, once the trainer's device is known). With a dev split the model
        directory is written at each best evaluation (on_best), not at each checkpoint."""
        cc, s = run.cfg.classify, run.state
        cached = cc.mode == "head-only" and cc.cache_features
        has_dev = "dev" in s["parts"]
        s["on_save"] = on_save
        trainer = (AdapterTrainer if s["peft"] else Trainer)(
            model.head if cached else model, self.make_objective(run),
            train_batch=data.train_batch, cfg=data.train_config or run.cfg.train, out_dir=run.out,
            tokens_per_batch=data.tokens_per_batch, evaluate_fn=data.evaluate,
            on_best=on_save if has_dev else None, on_save=None if has_dev else on_save,
            **data.trainer_options)
        if cached:
            model.to(trainer.device)
            for p in s["parts"].values():
                p.features = classifier_features(model, p.enc, cc.eval_batch_size, trainer.device)
        return trainer

    def finish(self, run: RunState, trainer, train_run: TrainRun) -> None:
        """The best weights back (or the last ones saved), dev/test evaluation, eval.json,
        meta.json's ``eval``; ``metrics``: dev_/test_ accuracy, macro_f1, majority (the
        majority-class baseline), best_step (and the trainable share for lora/qlora)."""
        cc, s, out = run.cfg.classify, run.state, run.out
        model, parts, labels = s["model"], s["parts"], s["splits"].vocab.labels
        es, peft = trainer.early_stopping, s["peft"]
        if "dev" in parts and peft:  # the best evaluation's adapters and head, in memory
            load_adapter(model, out / ADAPTER_DIR)
        elif "dev" in parts:  # the model directory holds the best evaluation's weights
            model.load_state_dict(read_weights(out))
        else:
            s["on_save"](model, trainer.summary())
        evals, train_run.report = evaluate_splits(model, parts, labels, s["counts"], out,
                                                  cc.eval_batch_size, trainer.device)
        train_run.metrics.update(split_metrics(evals))
        best = {"best_step": es.best_step, "metric": cc.metric, "best": es.best} if es else {}
        if es:
            train_run.metrics["best_step"] = es.best_step
        if peft:
            train_run.metrics.update(trainable_params=peft["trainable_params"],
                                     trainable_share=peft["trainable_share"])
        write_eval(out, labels, evals, best, trainer.summary())


register(ClassifyTask())


def train_classifier(cfg: RunConfig, **kw) -> TrainRun:
    """Fine-tune a classifier as ``cfg.classify`` says: :func:`~lmforge.tasks.train_task` with
    ``task = "classify"`` (``resume``, ``overwrite``, ``stop_at`` go to it). Returns the run
    with ``metrics`` (dev_/test_ accuracy, macro_f1, majority = the majority-class baseline;
    best_step) and a printable ``report``."""
    cfg.task = ClassifyTask.name
    return train_task(cfg, **kw)
