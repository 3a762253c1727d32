"""Autoregressive generation with a KV cache.

The prompt is run once through the model to fill the cache (prefill); then each step feeds
only the newest token. When the sequence reaches the model's context length, the cache is
refilled from the last half of the context (the model never sees more than it was trained on).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import nn

from ..errors import GenerationError
from .sampling import sample_next


@dataclass
class GenerationConfig:
    max_new_tokens: int = 128
    temperature: float = 1.0
    """0 = greedy decoding."""
    top_k: int = 0
    """Keep only the k most likely tokens (0 = all)."""
    top_p: float = 1.0
    """Keep the smallest set of tokens whose probability reaches p (1 = all)."""
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    """Stop when the generated text contains one of these strings (it is cut off there)."""
    stop_at_eos: bool = True

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise GenerationError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise GenerationError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise GenerationError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise GenerationError(f"top_p must be in (0, 1], got {self.top_p}")


def _generator(seed: int | None, device) -> torch.Generator | None:
    if seed is None:
        return None
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


@torch.no_grad()
def generate_tokens(model: nn.Module, idx: torch.Tensor, cfg: GenerationConfig,
                    eos_id: int | None = None) -> Iterator[torch.Tensor]:
    """Yield the next tokens (B,) one step at a time, for prompts ``idx`` (B, T) of equal
    length. Rows that produced ``eos_id`` keep yielding ``eos_id``; stops when all have."""
    context = model.cfg.context_length
    B, T = idx.shape
    if T == 0:
        raise GenerationError("the prompt is empty; give at least one token")
    if T > context:
        raise GenerationError(
            f"the prompt is {T} tokens but the model's context is {context} tokens; "
            "shorten the prompt")
    gen = _generator(cfg.seed, idx.device)
    cache = model.new_cache(B)
    logits = model(idx, cache=cache, last_only=True)[:, -1]  # (B, V)
    window = idx
    done = torch.zeros(B, dtype=torch.bool, device=idx.device)
    for _ in range(cfg.max_new_tokens):
        nxt = sample_next(logits, cfg.temperature, cfg.top_k, cfg.top_p, gen)  # (B,)
        if eos_id is not None and cfg.stop_at_eos:
            nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)
            done |= nxt == eos_id
        yield nxt
        if bool(done.all()):
            return
        window = torch.cat([window, nxt[:, None]], dim=1)[:, -context:]
        if cache.length >= context:  # full: refill from the most recent half of the context
            window = window[:, -(context // 2):]
            cache = model.new_cache(B)
            logits = model(window, cache=cache, last_only=True)[:, -1]
        else:
            logits = model(nxt[:, None], cache=cache, last_only=True)[:, -1]


def generate(model: nn.Module, idx: torch.Tensor, cfg: GenerationConfig,
             eos_id: int | None = None) -> torch.Tensor:
    """Prompt ids (B, T) -> generated ids (B, N) (without the prompt)."""
    out = list(generate_tokens(model, idx, cfg, eos_id))
    if not out:
        return idx.new_zeros(idx.shape[0], 0)
    return torch.stack(out, dim=1)


def stream_text(model: nn.Module, tokenizer, prompt: str, cfg: GenerationConfig,
                eos_id: int | None = None) -> Iterator[str]:
    """Yield pieces of generated text as they are produced (batch 1). Stop strings end the
    stream, and the text is cut just before them."""
    device = next(model.parameters()).device
    ids = tokenizer.encode(prompt).ids
    idx = torch.tensor([ids], dtype=torch.long, device=device)
    new: list[int] = []
    emitted = ""
    for tok in generate_tokens(model, idx, cfg, eos_id):
        t = int(tok[0])
        if eos_id is not None and t == eos_id and cfg.stop_at_eos:
            break
        new.append(t)
        text = tokenizer.decode(new, skip_special_tokens=False)
        if text.endswith("\ufffd"):  # a multi-byte character split across tokens: wait
            continue
        cut = min((i for s in cfg.stop if (i := text.find(s)) >= 0), default=-1)
        if cut >= 0:
            if cut > len(emitted):
                yield text[len(emitted):cut]
            return
        # hold back a tail that could be the start of a stop string
        hold = max((len(s) - 1 for s in cfg.stop), default=0)
        safe = len(text) - hold
        if safe > len(emitted):
            yield text[len(emitted):safe]
            emitted = text[:safe]
    if new:
        text = tokenizer.decode(new, skip_special_tokens=False)
        if len(text) > len(emitted):
            yield text[len(emitted):]


def generate_text(model: nn.Module, tokenizer, prompt: str, cfg: GenerationConfig,
                  eos_id: int | None = None) -> str:
    return "".join(stream_text(model, tokenizer, prompt, cfg, eos_id))
