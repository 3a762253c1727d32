"""``[train]``: the training engine's config (steps, batch, optimiser, schedule, precision,
device, checkpoints). The whole run config (:class:`lmforge.tasks.RunConfig`) holds it with the
model, data, tokenizer and task tables. ``docs/config.md`` documents each field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError


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
