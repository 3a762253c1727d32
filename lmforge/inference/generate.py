"""Autoregressive generation with a KV cache.

The prompt is run once through the model to fill the cache (prefill); then each step feeds
only the newest token. When the sequence reaches the model's context length, the cache is
refilled from the last half of the context (the model never sees more than it was trained on).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

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


EosIds = int | Sequence[int] | None
"""One end-of-sequence id, several (a chat model may end a turn with any of them), or none."""


def _eos_list(eos_id: EosIds) -> list[int]:
    if eos_id is None:
        return []
    return [int(eos_id)] if isinstance(eos_id, int) else [int(i) for i in eos_id]


def cache_length(context: int, prompt_len: int, max_new_tokens: int) -> int:
    """KV-cache positions generation needs: the prompt and the new tokens (the last new token
    is never fed back), at most the context (a model may declare 131072 positions)."""
    return max(1, min(context, prompt_len + max(max_new_tokens - 1, 0)))


@torch.no_grad()
def generate_tokens(model: nn.Module, idx: torch.Tensor, cfg: GenerationConfig,
                    eos_id: EosIds = None) -> Iterator[torch.Tensor]:
    """Yield the next tokens (B,) one step at a time, for prompts ``idx`` (B, T) of equal
    length. ``eos_id`` is one id or several; a row that produced one of them keeps yielding
    the first; stops when all rows have. The KV cache holds only the positions needed
    (prompt + new tokens, at most the context)."""
    context = model.cfg.context_length
    B, T = idx.shape
    if T == 0:
        raise GenerationError("the prompt is empty; give at least one token")
    if T > context:
        raise GenerationError(
            f"the prompt is {T} tokens but the model's context is {context} tokens; "
            "shorten the prompt")
    eos = _eos_list(eos_id) if cfg.stop_at_eos else []
    eos_t = torch.tensor(eos, dtype=torch.long, device=idx.device)
    gen = _generator(cfg.seed, idx.device)
    max_len = cache_length(context, T, cfg.max_new_tokens)
    cache = model.new_cache(B, max_len=max_len)
    logits = model(idx, cache=cache, last_only=True)[:, -1]  # (B, V)
    window = idx
    done = torch.zeros(B, dtype=torch.bool, device=idx.device)
    for step in range(cfg.max_new_tokens):
        nxt = sample_next(logits, cfg.temperature, cfg.top_k, cfg.top_p, gen)  # (B,)
        if eos:
            nxt = torch.where(done, torch.full_like(nxt, eos[0]), nxt)
            done |= torch.isin(nxt, eos_t)
        yield nxt
        if step == cfg.max_new_tokens - 1 or bool(done.all()):
            return  # the last token is not fed back
        window = torch.cat([window, nxt[:, None]], dim=1)[:, -context:]
        if cache.length >= max_len:  # full (only at the context): refill from its last half
            window = window[:, -(context // 2):]
            cache = model.new_cache(B, max_len=max_len)
            logits = model(window, cache=cache, last_only=True)[:, -1]
        else:
            logits = model(nxt[:, None], cache=cache, last_only=True)[:, -1]


def generate(model: nn.Module, idx: torch.Tensor, cfg: GenerationConfig,
             eos_id: EosIds = None) -> torch.Tensor:
    """Prompt ids (B, T) -> generated ids (B, N) (without the prompt)."""
    out = list(generate_tokens(model, idx, cfg, eos_id))
    if not out:
        return idx.new_zeros(idx.shape[0], 0)
    return torch.stack(out, dim=1)


def stream_ids(model: nn.Module, tokenizer, ids: Sequence[int], cfg: GenerationConfig,
               eos_id: EosIds = None) -> Iterator[str]:
    """Yield pieces of generated text as they are produced, for the prompt token ids ``ids``
    (batch 1). An end-of-sequence id ends the stream (it is not part of the text); stop
    strings end it too, and the text is cut just before them."""
    device = next(model.parameters()).device
    idx = torch.tensor([list(ids)], dtype=torch.long, device=device)
    stops = set(_eos_list(eos_id)) if cfg.stop_at_eos else set()
    new: list[int] = []
    emitted = ""
    for tok in generate_tokens(model, idx, cfg, eos_id):
        t = int(tok[0])
        if t in stops:
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


def stream_text(model: nn.Module, tokenizer, prompt: str, cfg: GenerationConfig,
                eos_id: EosIds = None) -> Iterator[str]:
    """:func:`stream_ids` for a text prompt (encoded with the tokenizer's own special tokens,
    e.g. a BOS it adds)."""
    yield from stream_ids(model, tokenizer, tokenizer.encode(prompt).ids, cfg, eos_id)


def generate_text(model: nn.Module, tokenizer, prompt: str, cfg: GenerationConfig,
                  eos_id: EosIds = None) -> str:
    return "".join(stream_text(model, tokenizer, prompt, cfg, eos_id))
