"""``[train]``: the training engine's config (steps, batch, optimiser, schedule, precision,
device, checkpoints). The whole run config (:class:`lmforge.tasks.RunConfig`) holds it with the
model, data, tokenizer and task tables. ``docs/config.md`` documents each field."""

from __future__ import annotations

import math
import re
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
    """Steps of linear warmup from 0 to lr (0 = none)."""
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
    """AdamW's first-moment decay, in [0, 1)."""
    beta2: float = 0.99
    """AdamW's second-moment decay, in [0, 1)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value; 0 = no clipping."""
    eval_every: int = 250
    """Evaluate on the validation split every N steps (and at the end); 0 = only at the end."""
    eval_batches: int = 20
    """Batches per evaluation."""
    checkpoint_every: int = 250
    """Write a resumable checkpoint every N steps (and at the end); 0 = only at the end."""
    keep_checkpoints: int = 2
    """Checkpoints kept on disk (the newest ones; at least 1)."""
    log_every: int = 10
    """Log the training loss every N steps."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Autocast precision: auto = bf16 on GPUs and on CPUs with hardware bf16 (AVX512-BF16,
    AMX), fp16 on older GPUs, float32 otherwise. Weights and optimiser state stay fp32."""
    device: str = "auto"
    """auto, cpu, cuda, cuda:N, mps."""
    compile: bool = False
    """Train through ``torch.compile`` (checked on the first batch; where the compiler or its
    C++ toolchain is missing, a one-line message and training goes on uncompiled)."""
    activation_checkpointing: Literal["none", "blocks", "selective"] = "none"
    """Trade compute for memory: ``blocks`` recomputes every transformer block in the backward
    pass (only the residual stream between blocks is stored); ``selective`` recomputes only
    each block's feed-forward (its wide hidden layer is the largest activation). Any task,
    LoRA and QLoRA included."""
    host_memory: Literal["default", "compact"] = "default"
    """The CPU heap: ``compact`` (glibc only) maps and unmaps every block above 256 KiB, so the
    resident memory follows the live tensors instead of keeping every freed activation; it
    costs time where a small model allocates many mid-sized temporaries (docs/training.md has
    both measured). Pair it with activation checkpointing for the lowest peak memory."""
    parallel: Literal["ddp", "fsdp"] = "ddp"
    """Under ``torchrun`` with several processes: ``ddp`` = a full model copy per process,
    gradients all-reduced; ``fsdp`` = FSDP2 (``fully_shard`` per block, then the root):
    parameters, gradients and optimiser state sharded across processes, checkpoints written as
    sharded ``torch.distributed.checkpoint`` directories that resume on any number of
    processes. One process: ignored."""
    fsdp_cpu_offload: bool = False
    """``parallel = "fsdp"``: keep the sharded parameters and optimiser state in CPU memory,
    moving each block's to the GPU only while it runs."""
    max_minutes: float = 0.0
    """Stop after this much wall time (0 = no limit); the last state is still saved."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        if (problem := _problem(self)) is not None:
            raise ConfigError(f"train.{problem[0]}: {problem[1]}")


_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d{1,4})?)$")


def _problem(cfg: TrainConfig) -> tuple[str, str] | None:
    """(field, what is wrong and the allowed range) for the first bad value, or None."""
    for name in ("max_steps", "batch_size", "grad_accum", "eval_batches", "log_every",
                 "keep_checkpoints"):
        if getattr(cfg, name) <= 0:
            return name, f"must be a positive integer (>= 1), got {getattr(cfg, name)}"
    for name in ("seq_len", "warmup_steps", "eval_every", "checkpoint_every"):
        if getattr(cfg, name) < 0:
            return name, f"must be >= 0 (0 = {_ZERO[name]}), got {getattr(cfg, name)}"
    for name in ("lr", "min_lr", "weight_decay", "grad_clip", "max_minutes"):
        value = getattr(cfg, name)
        if not (value >= 0 and math.isfinite(value)):  # (NaN fails every comparison)
            return name, f"must be a finite number >= 0, got {value}"
    if not 0 < cfg.layer_decay <= 1:
        return "layer_decay", f"must be in (0, 1], got {cfg.layer_decay}"
    for name in ("beta1", "beta2"):
        if not 0 <= getattr(cfg, name) < 1:
            return name, f"must be in [0, 1), got {getattr(cfg, name)}"
    if not isinstance(cfg.device, str) or not _DEVICE.match(cfg.device):
        return "device", f"must be auto, cpu, cuda, cuda:N or mps, got {cfg.device!r}"
    return None


_ZERO = {"seq_len": "model.context_length", "warmup_steps": "no warmup",
         "eval_every": "only at the end", "checkpoint_every": "only at the end"}
