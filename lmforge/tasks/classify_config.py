"""``[classify]``: the run config of ``task = "classify"`` (fine-tuning an encoder for
sequence classification; :mod:`lmforge.tasks.classify`). Every field has a default; see
``docs/encoder.md`` for worked examples."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from ..config import from_dict
from ..errors import ConfigError
from ..finetune.lora import LoRAConfig
from .sft_config import LEGACY_LORA_KEYS


@dataclass
class ClassifyConfig:
    init_from: str = ""
    """Model directory whose encoder starts the classifier (an imported MiniLM/BERT, an
    MLM-pretrained lmforge encoder, another classifier); "" = random init from [model] with a
    tokenizer from [tokenizer] (trained on the training texts unless tokenizer.path is set)."""
    train: str = ""
    """Labelled training file: CSV, TSV, JSONL or ``label text`` lines (lmforge.data.labeled)."""
    dev: str = ""
    """Dev file: evaluated every train.eval_every steps; picks the best weights and drives
    early stopping. "" = hold out ``dev_fraction`` of the training rows."""
    test: str = ""
    """Test file, evaluated once at the end with the best weights ("" = none)."""
    dev_fraction: float = 0.1
    """Without a dev file: the share of training rows held out as dev (seeded); 0 = no dev."""
    format: Literal["auto", "csv", "tsv", "jsonl", "label-text"] = "auto"
    """File format; auto = by extension (.csv, .tsv, .jsonl; anything else: label text lines)."""
    text_column: str = "text"
    """Column (CSV/TSV header, JSONL field) holding the text."""
    text_pair_column: str = ""
    """Second text column for sentence-pair tasks; "" = single texts."""
    label_column: str = "label"
    """Column holding the label (strings or integers)."""
    labels: list[str] = field(default_factory=list)
    """Class names in class-id order; [] = the labels seen in training (numbers in numeric,
    others in alphabetical order). Given explicitly, each needs a training example."""
    limit: int = 0
    """Train on a seeded random sample of this many training rows; 0 = all."""
    eval_limit: int = 0
    """Evaluate on a seeded random sample of this many dev/test rows; 0 = all."""
    mode: Literal["full", "head-only", "lora", "qlora"] = "full"
    """full = train every weight; head-only = freeze the encoder, train the classifier only;
    lora = frozen encoder + low-rank adapters (``[classify.lora]``), the head trained fully;
    qlora = the same on an encoder whose block projections are stored in 4-bit NF4. LoRA
    runs save the merged model (used like any classifier) and ``OUT_DIR/adapter``."""
    cache_features: bool = True
    """head-only: run the frozen encoder once per example and train the head on the stored
    features (same result, many times faster)."""
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    """``[classify.lora]``, mode lora/qlora: the adapters' rank, alpha, dropout and targets
    (module-name patterns of the encoder's linear layers, e.g. add "*.attn.k_proj",
    "*.attn.o_proj", "*.ff.*_proj" for every projection); the head is always trained fully
    (added to modules_to_save). (Older configs: flat ``lora_rank`` etc.)"""
    pooling: Literal["auto", "cls", "mean", "max"] = "auto"
    """What the head reads: cls = [CLS] through the pooler (when the model has one), mean/max
    over tokens; auto = the init model's sentence-embedding pooling (meta.json) or cls."""
    dropout: float | None = None
    """Dropout before the classifier's linear layer; None = the model's dropout."""
    class_weights: str | list[float] | dict[str, float] = "none"
    """Loss weight per class: "none", "balanced" (n / (classes * count)), a list in class
    order, or a table {label = weight}."""
    max_len: int = 128
    """Tokens per example, [CLS] and [SEP] included; longer texts are truncated."""
    truncation: Literal["head", "tail", "head+tail"] = "head"
    """Which tokens of a long text to keep: the first, the last, or the first quarter + the
    last three quarters of the budget."""
    epochs: float = 0.0
    """> 0: sets train.max_steps to this many passes over the training rows."""
    metric: Literal["accuracy", "macro_f1", "loss"] = "macro_f1"
    """Dev metric that picks the best weights and drives early stopping."""
    patience: int = 0
    """Stop after this many dev evaluations without improvement; 0 = never stop early."""
    eval_batch_size: int = 64
    """Examples per batch when evaluating and when caching head-only features."""

    _legacy_keys: ClassVar[dict[str, str]] = dict(LEGACY_LORA_KEYS)

    def __post_init__(self) -> None:
        if isinstance(self.lora, dict):  # ClassifyConfig(lora={"rank": 4}) in Python
            self.lora = from_dict(LoRAConfig, self.lora, "classify.lora")
        if not 0.0 <= self.dev_fraction < 1.0:
            raise ConfigError(f"classify.dev_fraction: must be in [0, 1), got {self.dev_fraction}")
        for name in ("limit", "eval_limit", "patience"):
            if getattr(self, name) < 0:
                raise ConfigError(f"classify.{name}: must be >= 0, got {getattr(self, name)}")
        if self.max_len < 3:
            raise ConfigError(f"classify.max_len: must be at least 3, got {self.max_len}")
        if self.epochs < 0 or self.eval_batch_size < 1:
            raise ConfigError("classify.epochs must be >= 0 and classify.eval_batch_size >= 1")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"classify.dropout: must be in [0, 1), got {self.dropout}")
        if isinstance(self.class_weights, str) and self.class_weights not in ("none", "balanced"):
            raise ConfigError(f"classify.class_weights: {self.class_weights!r} is not allowed; "
                              "use \"none\", \"balanced\", a list or a table {label = weight}")
