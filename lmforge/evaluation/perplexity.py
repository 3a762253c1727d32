"""Perplexity and bits per character/byte of a causal LM on held-out text.

Text longer than the context is scored with a sliding window: each window advances by
``stride`` tokens and only the targets not scored by an earlier window count, so every token
is predicted once, with at least ``context - stride`` tokens of history (except the first).

A Transformer-XL model (``model.memory_length > 0``) reads the text instead as consecutive
segments of ``context`` tokens, carrying its memory from one segment to the next, so every
token is predicted once, with the memory and the segment so far as history.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError
from ..tokenizers.special import IGNORE_INDEX


@dataclass
class PerplexityResult:
    loss: float
    """Mean negative log-likelihood per token, in nats."""
    perplexity: float
    bits_per_char: float
    bits_per_byte: float
    n_tokens: int
    n_chars: int
    n_bytes: int
    context: int
    stride: int

    def to_dict(self) -> dict:
        return asdict(self)


def windows(n: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, end, n_new) for inputs ids[start:end], targets ids[start+1:end+1], of which the
    last n_new are scored. Targets 1..n-1 are each scored exactly once."""
    out, scored, s = [], 0, 0
    while scored < n - 1:
        e = min(s + context, n - 1)
        out.append((s, e, e - scored))
        scored = e
        s += stride
    return out


@torch.no_grad()
def segment_nll(model: nn.Module, ids: list[int], segment: int,
                memory_length: int | None = None) -> tuple[float, int]:
    """(summed NLL in nats, targets scored) of ``ids`` read as one stream of consecutive
    segments of ``segment`` tokens with the XL memory carried (``memory_length`` positions,
    default the model's)."""
    device = next(model.parameters()).device
    data = torch.tensor(ids, dtype=torch.long, device=device)[None]  # (1, N)
    memory = model.new_memory(memory_length, segment)
    total, n = 0.0, 0
    for s in range(0, data.shape[1] - 1, segment):
        x = data[:, s:min(s + segment, data.shape[1] - 1)]  # (1, T)
        y = data[:, s + 1:s + 1 + x.shape[1]]
        logits = model(x, memory=memory).float()  # (1, T, V)
        total += float(F.cross_entropy(logits[0], y[0], reduction="sum"))
        n += y.shape[1]
    return total, n


@torch.no_grad()
def stream_loss(model: nn.Module, batches) -> dict:
    """{"loss": mean NLL per token} over consecutive ``(x, y, first)`` segment batches
    (``lmforge.data.streams``), the XL memory carried from each batch to the next."""
    was_training = model.training
    model.eval()
    memory, total, n = None, 0.0, 0
    for x, y, first in batches:
        device = next(model.parameters()).device
        if memory is None or bool(first) or memory.batch() not in (None, x.shape[0]):
            memory = model.new_memory(segment=x.shape[1])
        logits = model(x.to(device), memory=memory).float()
        total += float(F.cross_entropy(logits.flatten(0, 1), y.to(device).flatten(), reduction="sum"))
        n += y.numel()
    model.train(was_training)
    return {"loss": total / max(1, n)}


@torch.no_grad()
def perplexity(model: nn.Module, ids: list[int], *, n_chars: int, n_bytes: int,
               stride: int | None = None, batch_size: int = 8, bos_id: int | None = None,
               context: int | None = None) -> PerplexityResult:
    """Score the token sequence ``ids`` (of a text with ``n_chars`` characters / ``n_bytes``
    UTF-8 bytes). With ``bos_id`` the first token is predicted from it, else it is skipped.
    ``context`` is the window length (default and at most: the model's context); a
    Transformer-XL model reads segments of that length with its memory (``stride`` unused)."""
    limit = model.cfg.context_length
    if context is not None and not 0 < context <= limit:
        raise DataError(f"the window must be in 1..{limit} (the model's context), got {context}")
    context = context or limit
    stride = stride or max(1, context // 2)
    if not 0 < stride <= context:
        raise DataError(f"stride must be in 1..{context} (the model's context), got {stride}")
    if bos_id is not None:
        ids = [bos_id] + list(ids)
    if len(ids) < 2:
        raise DataError("the evaluation text is too short: it needs at least 2 tokens")
    was_training = model.training
    model.eval()
    if getattr(model.cfg, "memory_length", 0) > 0:
        total_nll, total_n = segment_nll(model, list(ids), context)
        stride = context
    else:
        total_nll, total_n = _window_nll(model, ids, context, stride, batch_size)
    model.train(was_training)
    loss = total_nll / total_n
    return PerplexityResult(
        loss=loss, perplexity=math.exp(loss),
        bits_per_char=total_nll / math.log(2) / max(1, n_chars),
        bits_per_byte=total_nll / math.log(2) / max(1, n_bytes),
        n_tokens=total_n, n_chars=n_chars, n_bytes=n_bytes, context=context, stride=stride)


def _window_nll(model: nn.Module, ids, context: int, stride: int,
                batch_size: int) -> tuple[float, int]:
    """(summed NLL, targets scored) over the sliding windows of :func:`windows`."""
    device = next(model.parameters()).device
    data = torch.tensor(ids, dtype=torch.long)
    spans = windows(len(ids), context, stride)
    total_nll, total_n = 0.0, 0
    for i in range(0, len(spans), batch_size):
        group = spans[i:i + batch_size]
        width = max(e - s for s, e, _ in group)
        x = torch.zeros(len(group), width, dtype=torch.long)
        y = torch.full((len(group), width), IGNORE_INDEX, dtype=torch.long)
        for row, (s, e, n_new) in enumerate(group):
            x[row, : e - s] = data[s:e]
            y[row, e - s - n_new: e - s] = data[s + 1 + (e - s - n_new): e + 1]
        logits = model(x.to(device)).float()  # (b, T, V)
        nll = F.cross_entropy(logits.flatten(0, 1), y.to(device).flatten(), ignore_index=IGNORE_INDEX,
                              reduction="sum")
        total_nll += float(nll)
        total_n += int((y != IGNORE_INDEX).sum())
    return total_nll, total_n


def text_perplexity(model: nn.Module, tokenizer, text: str, *, stride: int | None = None,
                    batch_size: int = 8, bos_id: int | None = None,
                    context: int | None = None) -> PerplexityResult:
    ids = tokenizer.encode(text).ids
    return perplexity(model, ids, n_chars=len(text), n_bytes=len(text.encode("utf-8")),
                      stride=stride, batch_size=batch_size, bos_id=bos_id, context=context)
