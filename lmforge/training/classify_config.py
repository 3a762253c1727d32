"""``[classify]``: the run config of ``task = "classify"`` (fine-tuning an encoder for
sequence classification; :mod:`lmforge.tasks.classify`). Every field has a default; see
``docs/encoder.md`` for worked examples."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..errors import ConfigError


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
    lora = frozen encoder + low-rank adapters on ``lora_targets``, the head trained fully;
    qlora = the same on an encoder whose block projections are stored in 4-bit NF4. LoRA
    runs save the merged model (used like any classifier) and ``OUT_DIR/adapter``."""
    cache_features: bool = True
    """head-only: run the frozen encoder once per example and train the head on the stored
    features (same result, many times faster)."""
    lora_rank: int = 8
    """lora/qlora: the rank r of each adapter (trainable params per layer: r * (in + out))."""
    lora_alpha: float = 16.0
    """lora/qlora: the update is scaled by lora_alpha / lora_rank."""
    lora_dropout: float = 0.0
    """lora/qlora: dropout on the adapters' input (training only)."""
    lora_targets: list[str] = field(default_factory=lambda: ["*.attn.q_proj", "*.attn.v_proj"])
    """lora/qlora: module-name patterns of the encoder's linear layers to adapt (globs, or
    re:REGEX), e.g. add "*.attn.k_proj", "*.attn.o_proj", "*.ff.*_proj" for every projection."""
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

    def __post_init__(self) -> None:
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
        if isinstance(self.lora_rank, bool) or not isinstance(self.lora_rank, int) \
                or self.lora_rank <= 0:
            raise ConfigError(f"classify.lora_rank: must be a positive integer, got {self.lora_rank!r}")
        if not self.lora_alpha > 0:
            raise ConfigError(f"classify.lora_alpha: must be positive, got {self.lora_alpha!r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"classify.lora_dropout: must be in [0, 1), got {self.lora_dropout!r}")
        if isinstance(self.lora_targets, str):
            self.lora_targets = [self.lora_targets]
        if not self.lora_targets:
            raise ConfigError("classify.lora_targets: give at least one module-name pattern, "
                              'e.g. ["*.attn.q_proj", "*.attn.v_proj"]')
        if isinstance(self.class_weights, str) and self.class_weights not in ("none", "balanced"):
            raise ConfigError(f"classify.class_weights: {self.class_weights!r} is not allowed; "
                              "use \"none\", \"balanced\", a list or a table {label = weight}")
