"""The model side of ``task = "classify"`` (:mod:`lmforge.tasks.classify`): the classifier's
config (an encoder config with a classification head), the encoder of ``classify.init_from``
loaded under a new head, and the LoRA / QLoRA adapters of the PEFT modes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import CheckpointError, ConfigError
from ..finetune import inject_lora, quantize_nf4
from ..modeldir.directory import (check_vocab, load_tokenizer_file, read_config, read_meta,
                                  read_weights)
from ..models import SequenceClassifier, build_model
from .classify_config import ClassifyConfig

PEFT_MODES = ("lora", "qlora")
"""The modes that train adapters (and the head) on a frozen encoder."""


def resolve_pooling(pooling: str, init_meta) -> str:
    """``auto`` -> the init model's sentence-embedding pooling (its meta, a ModelMeta), else
    ``cls``."""
    if pooling != "auto":
        return pooling
    se = init_meta.sentence_embedding if init_meta is not None else None
    return (se.pooling if se is not None else None) or "cls"


TEXT_CLASSIFIER_ARCHS = ("encoder", "rnn", "lstm", "gru", "text_cnn")
"""``model.arch`` values the text classifier trains (the baselines: docs/baselines.md)."""


def check_encoder(base) -> None:
    """Refuse a ModelConfig that is not an encoder (or a text baseline: rnn/lstm/gru/text_cnn)."""
    if base.arch not in TEXT_CLASSIFIER_ARCHS:
        raise ConfigError(f"classification trains model.arch = {' / '.join(TEXT_CLASSIFIER_ARCHS)}"
                          f", got {base.arch!r}")


def classifier_config(base, n_classes: int, pooling: str, dropout: float | None):
    """``base`` (an encoder ModelConfig) with a classification head."""
    check_encoder(base)
    return dataclasses.replace(base, heads="classifier", n_classes=n_classes,
                               classifier_pooling=pooling, classifier_dropout=dropout)


def read_init(src: str | Path):
    """The config, tokenizer and meta (a ModelMeta) of model directory ``src`` (checked to fit
    each other); nothing is built."""
    src = Path(src)
    cfg = read_config(src)
    tokenizer = load_tokenizer_file(src)
    check_vocab(tokenizer, cfg, str(src))
    return cfg, tokenizer, read_meta(src)


def init_config(src: str | Path, cfg, meta, n_classes: int, pooling: str = "auto",
                dropout: float | None = None):
    """The classifier config on the encoder of ``src`` (whose config and meta are ``cfg``,
    ``meta``); errors name ``classify.init_from``."""
    try:
        return classifier_config(cfg, n_classes, resolve_pooling(pooling, meta), dropout)
    except ConfigError as e:
        raise ConfigError(f"classify.init_from = {str(src)!r}: {e}") from None


def load_encoder(src: str | Path, mcfg) -> SequenceClassifier:
    """A classifier built from ``mcfg`` (random head) whose encoder weights are those of model
    directory ``src``."""
    model = build_model(mcfg)
    encoder = {k: v for k, v in read_weights(Path(src)).items() if k.startswith("encoder.")}
    missing, _ = model.load_state_dict(encoder, strict=False)
    missing = [k for k in missing if not k.startswith("head.")]
    if missing:
        raise CheckpointError(f"{src}: the encoder weights are incomplete: missing {missing[:5]}")
    return model


def init_classifier(src: str | Path, n_classes: int, pooling: str = "auto",
                    dropout: float | None = None) -> tuple[SequenceClassifier, object, object]:
    """A classifier whose encoder is that of model directory ``src`` (a MaskedLM with any
    heads, or another classifier) and whose head is new: (model, tokenizer, src's meta)."""
    cfg, tokenizer, meta = read_init(src)
    model = load_encoder(src, init_config(src, cfg, meta, n_classes, pooling, dropout))
    return model, tokenizer, meta


def add_adapters(model: SequenceClassifier, cc: ClassifyConfig) -> dict:
    """lora/qlora: quantise the encoder's block projections (qlora), wrap ``cc.lora.targets``
    in LoRA adapters and keep the head trainable. Returns the report for meta.json."""
    base_params = model.num_params()
    lcfg = dataclasses.replace(cc.lora, modules_to_save=list(dict.fromkeys(
        [*cc.lora.modules_to_save, "head"])))
    out: dict = {"mode": cc.mode, "rank": lcfg.rank, "alpha": lcfg.alpha,
                 "dropout": lcfg.dropout, "targets": list(lcfg.targets),
                 "modules_to_save": lcfg.modules_to_save, "base_params": base_params}
    if cc.mode == "qlora":
        nf4 = quantize_nf4(model, where='classify.mode = "qlora"')
        out["nf4_bytes_per_param"] = round(nf4.bytes_per_param, 4)
    report = inject_lora(model, lcfg, where="classify.lora")  # errors name the fields
    adapters = report.trainable_params - model.head.proj.weight.numel() - \
        model.head.proj.bias.numel()
    out.update(layers=len(report.layers), adapter_params=adapters,
               trainable_params=report.trainable_params,
               trainable_share=report.trainable_share)
    return out
