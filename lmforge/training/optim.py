"""AdamW with weight decay on matrices only (and optional layer-wise learning-rate decay), and the
learning-rate schedules."""

from __future__ import annotations

import math
import re

import torch
from torch import nn

EMBEDDING_MODULES = frozenset({"embed", "pos", "token_type", "embed_norm"})
"""Module names of the input embeddings (below the first block) in lmforge's backbones."""
_BLOCK = re.compile(r"(?:^|\.)layers\.(\d+)\.")  # ...layers.<i>. : block i


def layer_depths(model: nn.Module) -> dict[str, int]:
    """Parameter name -> depth: 0 for the input embeddings, i + 1 for block i (``layers.i.``),
    n_blocks + 1 for everything above (final norm, heads). An encoder-decoder's two stacks are
    counted alike (block i of either has depth i + 1)."""
    names = [n for n, _ in model.named_parameters()]
    blocks = {int(m.group(1)) for n in names if (m := _BLOCK.search(n))}
    top = max(blocks, default=-1) + 2
    depths = {}
    for n in names:
        m = _BLOCK.search(n)
        if m:
            depths[n] = int(m.group(1)) + 1
        else:
            depths[n] = 0 if EMBEDDING_MODULES & set(n.split(".")[:-1]) else top
    return depths


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.99),
                   layer_decay: float = 1.0) -> torch.optim.AdamW:
    """Matrices/embeddings decay, vectors (biases, norm gains) do not. With ``layer_decay`` < 1
    (layer-wise learning-rate decay, as ELECTRA and DeBERTa are fine-tuned) each group's
    ``lr_scale`` is layer_decay ** (top - depth): the head trains at the full rate, the block
    below at layer_decay times it, ..., the embeddings at the smallest; the trainer multiplies
    the scheduled rate by it."""
    depths = layer_depths(model) if layer_decay != 1.0 else {}
    top = max(depths.values(), default=0)
    groups: dict[tuple[int, bool], dict] = {}
    seen = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        decays = p.dim() >= 2
        depth = depths.get(name, top)
        group = groups.setdefault((depth, decays), {
            "params": [], "weight_decay": weight_decay if decays else 0.0,
            **({"lr_scale": layer_decay ** (top - depth)} if depths else {})})
        group["params"].append(p)
    if not depths:  # the two groups in a fixed order (checkpoints rely on it)
        groups = {k: groups.get(k, {"params": [], "weight_decay": weight_decay if k[1] else 0.0})
                  for k in ((0, True), (0, False))}
    params = [p for g in groups.values() for p in g["params"]]
    fused = all(p.is_cuda for p in params) and bool(params)
    return torch.optim.AdamW(list(groups.values()), lr=lr, betas=betas, fused=fused or None)


def lr_at(step: int, *, lr: float, min_lr: float, warmup_steps: int, max_steps: int,
          schedule: str = "cosine") -> float:
    """Linear warmup from ~0 to ``lr`` over ``warmup_steps``, then ``schedule`` down to
    ``min_lr`` at ``max_steps`` (cosine or linear), flat (constant), or inverse_sqrt:
    ``lr * sqrt(warmup_steps / (step + 1))`` ("Attention Is All You Need", which peaks at the
    end of warmup and then decays with 1/sqrt(step))."""
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "inverse_sqrt":
        return lr * math.sqrt(max(warmup_steps, 1) / (step + 1))
    if schedule == "constant" or max_steps <= warmup_steps:
        return lr
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    if schedule == "linear":
        return lr + (min_lr - lr) * progress
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))
