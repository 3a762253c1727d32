"""How a model is prepared for training: activation checkpointing, data parallelism (DDP or
FSDP2) and ``torch.compile``, in that order (``train.activation_checkpointing``,
``train.parallel``, ``train.compile``)."""

from __future__ import annotations

import contextlib
import sys

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..blocks import TransformerBlock
from ..errors import ConfigError
from .distributed import DistInfo


class _CheckpointedForward:
    """A module's forward that stores only its inputs in training and recomputes the rest in
    the backward pass. An object, not a closure, so that ``copy.deepcopy`` of the model gives
    the copy a forward bound to the copied module."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.inner = type(module).forward

    def __call__(self, *args, **kwargs):
        m = self.module
        if m.training and torch.is_grad_enabled():
            return checkpoint(self.inner, m, *args, use_reentrant=False, **kwargs)
        return self.inner(m, *args, **kwargs)


def apply_activation_checkpointing(model: nn.Module, mode: str) -> int:
    """``blocks``: recompute each transformer block in the backward pass (only the residual
    stream between blocks is stored); ``selective``: recompute only each block's feed-forward
    (its 4x-wide hidden activations are the largest; attention's are kept). Works under LoRA
    and QLoRA (their layers are inside the blocks). Returns how many modules were wrapped."""
    if mode == "none":
        return 0
    blocks = [m for m in model.modules() if isinstance(m, TransformerBlock)]
    if not blocks:
        raise ConfigError(f"train.activation_checkpointing = {mode!r}: this model has no "
                          "transformer blocks to checkpoint; set it to \"none\"")
    for block in blocks:
        target = block if mode == "blocks" else block.ff
        if not isinstance(target.__dict__.get("forward"), _CheckpointedForward):
            target.forward = _CheckpointedForward(target)
    return len(blocks)


def shard_model(model: nn.Module, dtype: torch.dtype, cpu_offload: bool) -> nn.Module:
    """FSDP2: ``fully_shard`` each transformer block, then the root, so each block's
    parameters are gathered just before it runs and freed after. Parameters compute in
    ``dtype`` (bf16/fp16 mixed precision) and gradients are reduced in fp32."""
    from torch.distributed.fsdp import (CPUOffloadPolicy, MixedPrecisionPolicy,  # (FSDP runs
                                        OffloadPolicy, fully_shard)  # only under torchrun)

    mp = MixedPrecisionPolicy(param_dtype=None if dtype == torch.float32 else dtype,
                              reduce_dtype=torch.float32)
    offload = CPUOffloadPolicy() if cpu_offload else OffloadPolicy()
    for block in [m for m in model.modules() if isinstance(m, TransformerBlock)]:
        fully_shard(block, mp_policy=mp, offload_policy=offload)
    fully_shard(model, mp_policy=mp, offload_policy=offload)
    return model


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def gradient_sync(model: nn.Module, sync: bool, dist: DistInfo):
    """A context in which backward does (``sync``) or does not all-reduce the gradients: the
    last micro-batch of an accumulation step synchronises, the others accumulate locally."""
    if sync or not dist.enabled:
        return contextlib.nullcontext()
    if hasattr(model, "no_sync"):  # DDP
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        return _fsdp_no_sync(model)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _fsdp_no_sync(model):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def compile_model(model: nn.Module, probe) -> nn.Module:
    """``torch.compile(model)``, checked on one forward pass (``probe(compiled)``): when the
    compiler or its backend is missing here (no C++ compiler, an unsupported platform), say so
    in one line and train uncompiled instead."""
    compiled = torch.compile(model)
    try:
        probe(compiled)
    except Exception as e:  # inductor raises many kinds (BackendCompilerFailed, OSError, ...)
        why = " ".join(str(e).split())[:200]
        print(f"lmforge: train.compile: torch.compile is unavailable here ({type(e).__name__}: "
              f"{why}); training without it", file=sys.stderr, flush=True)
        return model
    return compiled
