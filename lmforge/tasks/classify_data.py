"""The data side of ``task = "classify"`` (:mod:`lmforge.tasks.classify`): the train/dev/test
splits and their label vocabulary, the encoded splits (ids, class ids, cached head features),
the training batches and the ``data`` / classifier entries of meta.json."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from ..config import to_dict
from ..data import epoch_indices
from ..data.encode import EncodedTexts, encode_texts
from ..data.labeled import LabeledData, LabelVocab, read_labeled
from ..errors import ConfigError
from ..inference.encoder import predict_logits
from ..models import SequenceClassifier
from .classify_config import ClassifyConfig


@dataclass
class ClassifySplits:
    train: LabeledData
    dev: LabeledData | None
    test: LabeledData | None
    vocab: LabelVocab
    dev_source: str  # "file", "held out from train" or "none"


def require_train(cc: ClassifyConfig) -> None:
    """Refuse an empty ``classify.train`` (checked before anything is written)."""
    if not cc.train:
        raise ConfigError("classify.train is empty: set it to a labelled file (CSV, TSV, JSONL or "
                          "'label text' lines), e.g. --set classify.train=data/train.csv")


def read_splits(cc: ClassifyConfig, seed: int) -> ClassifySplits:
    """The train/dev/test files of ``cc``, checked, sampled (limit/eval_limit), with the label
    vocabulary of the training split; unknown dev/test labels raise DataError."""
    require_train(cc)
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


def encode_splits(splits: ClassifySplits, tokenizer, cc: ClassifyConfig) -> dict[str, EncodedSplit]:
    """The splits present ("train", "dev", "test"), encoded as ``[CLS] text [SEP]`` ids cut to
    ``cc.max_len`` (``cc.truncation``), with their class ids."""
    encode = partial(encode_texts, tokenizer, max_len=cc.max_len, truncation=cc.truncation)
    return {name: EncodedSplit(d, encode(d.texts, d.pairs), splits.vocab.encode(d))
            for name, d in (("train", splits.train), ("dev", splits.dev), ("test", splits.test))
            if d is not None}


def batch_fn(train: EncodedSplit, batch_size: int, grad_accum: int, seed: int, cached: bool,
             world_size):
    """``train_batch(step, micro, rank)``: seeded epochs over the training rows (a pure function
    of (seed, step, micro-step, rank)); head inputs instead of ids when ``cached``.
    ``world_size()`` is asked at each call (it is known once the trainer exists)."""
    B = batch_size

    def train_batch(step: int, micro: int, rank: int) -> dict:
        offset = ((step * grad_accum + micro) * world_size() + rank) * B
        idx = epoch_indices(len(train.y), B, seed, offset)
        batch = {"features": train.features[idx]} if cached else train.enc.batch(idx)
        batch["labels"] = torch.from_numpy(train.y[idx])
        return batch

    return train_batch


def data_meta(splits: ClassifySplits, parts: dict[str, EncodedSplit]) -> dict:
    """The ``data`` entry of meta.json: per split its path, rows, truncated rows and class
    counts; where dev came from; the paths read."""
    labels = splits.vocab.labels
    data: dict = {name: {"path": p.data.path, "rows": len(p.y), "truncated": p.enc.n_truncated,
                         "class_counts": dict(zip(labels, splits.vocab.counts(p.y).tolist()))}
                  for name, p in parts.items()}
    data.update(dev_source=splits.dev_source, paths=sorted({p.data.path for p in parts.values()}))
    return data


def classifier_meta(cfg, labels: list[str], model: SequenceClassifier, init_meta,
                    weights: torch.Tensor | None, peft: dict | None = None) -> dict:
    """meta.json fields of the classifier directory besides ``data`` (training results are
    added as they come); ``init_meta`` is the init model's meta (a ModelMeta) or None."""
    cc = cfg.classify
    meta = {
        "task": "classify",
        "classifier": {"labels": labels, "max_len": cc.max_len, "truncation": cc.truncation,
                       "pooling": model.pooling, "mode": cc.mode, "format": cc.format,
                       "text_column": cc.text_column, "text_pair_column": cc.text_pair_column,
                       "label_column": cc.label_column},
        "init_from": {"path": cc.init_from, "task": init_meta.task,
                      "source": to_dict(init_meta.source) if init_meta.source else None}
        if cc.init_from else None,
        "class_weights": None if weights is None else weights.tolist(),
        "parameters": peft["base_params"] if peft else model.num_params(),
        "trainable_parameters": peft["trainable_params"] if peft else
        model.num_params(trainable_only=True),
    }
    meta["trainable_share"] = peft["trainable_share"] if peft else \
        meta["trainable_parameters"] / max(1, meta["parameters"])
    if peft:
        meta["lora"] = peft
    if cc.mode == "head-only" and init_meta is not None and init_meta.sentence_embedding:
        # the encoder is unchanged: its sentence embeddings are still the init model's
        meta["sentence_embedding"] = to_dict(init_meta.sentence_embedding)
    return meta
