"""The run config: everything `lmforge train CONFIG.toml` reads. Every field has a default;
a TOML file only lists what it changes. ``docs/config.md`` documents each field."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..config import apply_overrides, from_dict, load_file
from ..errors import ConfigError
from ..models import ModelConfig
from .classify_config import ClassifyConfig
from .seq2seq_config import Seq2SeqConfig
from .sft_config import SFTConfig


@dataclass
class TokenizerConfig:
    kind: Literal["char", "bpe", "wordpiece", "unigram"] = "char"
    """Tokenizer to train on the training data (ignored when ``path`` is set)."""
    vocab_size: int = 4096
    """Target vocabulary size for bpe/wordpiece/unigram (char takes every character seen)."""
    path: str = ""
    """An existing tokenizer.json (or a directory holding one) to use instead of training."""


@dataclass
class DataConfig:
    path: str | list[str] = ""
    """Text file(s), directories or JSONL files to train on."""
    text_field: str = "text"
    """Field holding the text in JSONL records."""
    val_fraction: float = 0.1
    """Share of the token stream held out for validation (the end of the data)."""
    cache_dir: str = ""
    """Where the tokenised memory-mapped arrays are cached; "" = OUT_DIR/data-cache."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction: must be in [0, 1), got {self.val_fraction}")


@dataclass
class TrainConfig:
    max_steps: int = 2000
    """Optimiser steps to run."""
    batch_size: int = 12
    """Sequences per micro-batch (per device)."""
    seq_len: int = 0
    """Tokens per training sequence; 0 = model.context_length."""
    grad_accum: int = 1
    """Micro-batches summed into one optimiser step."""
    lr: float = 1e-3
    """Peak learning rate, reached after warmup."""
    min_lr: float = 1e-4
    """Learning rate at the end of the cosine decay."""
    warmup_steps: int = 100
    schedule: Literal["cosine", "linear", "constant", "inverse_sqrt"] = "cosine"
    """After warmup: cosine or linear decay to min_lr, constant, or inverse_sqrt (the original
    Transformer's: lr * sqrt(warmup_steps / step))."""
    weight_decay: float = 0.1
    """AdamW weight decay, applied to matrices only (not to biases, norms)."""
    layer_decay: float = 1.0
    """Layer-wise learning-rate decay for fine-tuning: the layers above the blocks (heads,
    final norm) train at lr, block i at lr * layer_decay ** (n_layer - i), the embeddings at
    lr * layer_decay ** (n_layer + 1). 1 = one rate for all; 0.8-0.95 is usual."""
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value; 0 = no clipping."""
    eval_every: int = 250
    """Evaluate on the validation split every N steps (and at the end)."""
    eval_batches: int = 20
    """Batches per evaluation."""
    checkpoint_every: int = 250
    """Write a resumable checkpoint every N steps (and at the end); 0 = only at the end."""
    keep_checkpoints: int = 2
    log_every: int = 10
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Autocast precision: auto = bf16 on GPUs and on CPUs with hardware bf16 (AVX512-BF16,
    AMX), fp16 on older GPUs, float32 otherwise. Weights and optimiser state stay fp32."""
    device: str = "auto"
    """auto, cpu, cuda, cuda:N, mps."""
    compile: bool = False
    """Wrap the model in torch.compile."""
    max_minutes: float = 0.0
    """Stop after this much wall time (0 = no limit); the last state is still saved."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "grad_accum", "eval_batches", "log_every"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name}: must be positive, got {getattr(self, name)}")
        for name in ("lr", "min_lr", "weight_decay", "grad_clip", "max_minutes"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name}: must be >= 0, got {getattr(self, name)}")
        if not 0 < self.layer_decay <= 1:
            raise ConfigError(f"train.layer_decay: must be in (0, 1], got {self.layer_decay}")


@dataclass
class RunConfig:
    out_dir: str = "runs/lm"
    """The model directory written by this run (checkpoints, logs and plots go inside)."""
    seed: int = 1337
    """Seeds the model initialisation, dropout and the order of training batches."""
    task: Literal["pretrain", "classify", "sft"] = "pretrain"
    """pretrain = causal LM (decoder), masked LM (encoder) or, for seq2seq, what
    [seq2seq] says (translation or span corruption), by model.arch; classify =
    fine-tune an encoder for sequence classification, configured by [classify]; sft =
    instruction-tune a pretrained causal LM (full, LoRA or QLoRA), configured by [sft]."""
    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    seq2seq: Seq2SeqConfig = field(default_factory=Seq2SeqConfig)

    @classmethod
    def load(cls, path: str | None = None, overrides: list[str] | None = None,
             preset: str | None = None) -> "RunConfig":
        """Preset (if any) < config file (if any) < ``--set`` overrides."""
        from .presets import preset_dict

        data: dict = preset_dict(preset) if preset else {}
        if path:
            _deep_update(data, load_file(path))
        apply_overrides(data, overrides or [])
        where = f"{path}: " if path else ""
        try:
            return from_dict(cls, data)
        except ConfigError as e:
            raise ConfigError(f"{where}{e}") from None


def _deep_update(base: dict, new: dict) -> dict:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_update(base[k], v)
        else:
            base[k] = v
    return base
