"""Autoregressive generation with a KV cache.

The prompt is run once through the model to fill the cache (prefill); then each step feeds
only the newest token. When the sequence reaches the model's context length, the cache is
refilled from the last half of the context (the model never sees more than it was trained on).

A :class:`PrefixCache` keeps the cache, and the token ids it holds, from one generation to the
next (a chat: each turn's prompt extends the last one), so the next prompt feeds only the
tokens after the longest common prefix.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..blocks.kv_cache import KVCache
from ..errors import GenerationError
from .recurrent import generate_recurrent, is_recurrent
from .sampling import EosIds, stop_rules
from .sampling import eos_list as _eos_list
from .sampling import next_tokens as _next_tokens


@dataclass
class GenerationConfig:
    max_new_tokens: int = 128
    temperature: float = 1.0
    """0 = greedy decoding."""
    top_k: int = 0
    """Keep only the k most likely tokens (0 = all)."""
    top_p: float = 1.0
    """Keep the smallest set of tokens whose probability reaches p (1 = all)."""
    repetition_penalty: float = 1.0
    """Penalise tokens already in the prompt or the output (transformers' semantics; 1 = off)."""
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
        if not self.repetition_penalty > 0:
            raise GenerationError(f"repetition_penalty must be > 0 (1 = off), got "
                                  f"{self.repetition_penalty}")


def cache_length(context: int, prompt_len: int, max_new_tokens: int) -> int:
    """KV-cache positions generation needs: the prompt and the new tokens (the last new token
    is never fed back), at most the context (a model may declare 131072 positions)."""
    return max(1, min(context, prompt_len + max(max_new_tokens - 1, 0)))


class PrefixCache:
    """A KV cache (batch 1) kept between generations, with the token ids whose keys and
    values it holds (``ids[i]`` at position ``i``). :func:`generate_tokens` given one feeds
    only the prompt tokens after the longest common prefix of ``ids`` and the prompt: the
    positions after that prefix are dropped (the cache's shared ``length`` is set back; later
    writes overwrite them). The cache grows when a generation needs more positions: it is
    reallocated, doubling, up to the model's context, and the kept prefix copied over.

    The last token of a generation is never fed back, so ``ids`` ends one token short of the
    generated text."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.cache: KVCache | None = None
        self.ids: list[int] = []
        self.owner: object | None = None
        """The generation using the cache now (set by :func:`generate_tokens`)."""
        self.kept = 0
        """Prompt tokens the last :meth:`prepare` found already cached (not fed again)."""
        self.fed = 0
        """Prompt tokens the last :meth:`prepare` left to feed (the prompt minus the kept
        prefix)."""

    def reset(self) -> None:
        """Forget everything (and free the buffers): the next generation starts fresh."""
        self.cache, self.ids, self.owner = None, [], None

    def bypass(self, fed: int) -> None:
        """A generation that keeps no KV cache (Transformer-XL, recurrent) used this one:
        reset it, and record that it kept nothing and fed the whole prompt (``fed`` tokens)."""
        self.reset()
        self.kept, self.fed = 0, fed

    @property
    def max_len(self) -> int:
        return self.cache.max_len if self.cache is not None else 0

    def prepare(self, ids: Sequence[int], need: int) -> int:
        """Keep the longest common prefix of the cached ids and ``ids`` (at most all but the
        last of ``ids``: the model must see one token to predict the next), make room for
        ``need`` positions, and return how many of ``ids`` are kept (not to be fed)."""
        ids = [int(i) for i in ids]
        cache = self.cache
        if cache is not None:
            probe = self.model.new_cache(1, max_len=1)  # the model's dtype and device now
            if cache.length != len(self.ids) or (cache.k[0].dtype, cache.k[0].device) != \
                    (probe.k[0].dtype, probe.k[0].device):
                cache = None  # interrupted mid-step, or the model was moved: start fresh
        keep = 0
        if cache is not None:
            limit = min(len(self.ids), len(ids) - 1)
            while keep < limit and self.ids[keep] == ids[keep]:
                keep += 1
        if cache is None or cache.max_len < need:
            # grow by doubling (up to the context), not to the whole context at once
            size = need if cache is None else \
                max(need, min(self.model.cfg.context_length, 2 * cache.max_len))
            new = self.model.new_cache(1, max_len=size)
            if keep:
                for old_t, new_t in zip(cache.buffers(), new.buffers()):
                    new_t[:, :, :keep] = old_t[:, :, :keep]
            cache = new
        cache.length = keep
        self.cache, self.ids = cache, ids[:keep]
        self.kept, self.fed = keep, len(ids) - keep
        return keep

    def fed_tokens(self, ids: Sequence[int]) -> None:
        """Record tokens just run through the model (the cache advanced by their number)."""
        self.ids.extend(int(i) for i in ids)


@torch.no_grad()
def _check_prompt(idx: torch.Tensor, context: int) -> tuple[int, int]:
    """(B, T) of a prompt batch that fits the context; a GenerationError otherwise."""
    B, T = idx.shape
    if T == 0:
        raise GenerationError("the prompt is empty; give at least one token")
    if T > context:
        raise GenerationError(
            f"the prompt is {T} tokens but the model's context is {context} tokens; "
            "shorten the prompt")
    return B, T


def generate_tokens(model: nn.Module, idx: torch.Tensor, cfg: GenerationConfig,
                    eos_id: EosIds = None,
                    cache: PrefixCache | None = None) -> Iterator[torch.Tensor]:
    """Yield the next tokens (B,) one step at a time, for prompts ``idx`` (B, T) of equal
    length. ``eos_id`` is one id or several; a row that produced one of them keeps yielding
    the first; stops when all rows have. The KV cache holds only the positions needed
    (prompt + new tokens, at most the context).

    ``cache`` (batch 1): a :class:`PrefixCache` kept from an earlier generation; ``idx`` is
    still the whole prompt, but only the tokens after the prefix the cache already holds are
    fed, and the cache is left holding the prompt and the tokens fed back.

    A Transformer-XL model (``model.memory_length > 0``) generates with its memory instead of
    a KV cache (:func:`generate_xl`); ``cache`` is then reset and not used."""
    if getattr(model.cfg, "memory_length", 0) > 0:
        return generate_xl(model, idx, cfg, eos_id, cache)
    if is_recurrent(model):  # rnn/lstm/gru: the recurrent state, no KV cache, no context limit
        return generate_recurrent(model, idx, cfg, eos_id, cache)
    return _generate_cached(model, idx, cfg, eos_id, cache)


def _generate_cached(model: nn.Module, idx: torch.Tensor, cfg: GenerationConfig,
                     eos_id: EosIds, cache: PrefixCache | None) -> Iterator[torch.Tensor]:
    """:func:`generate_tokens` with a KV cache."""
    context = model.cfg.context_length
    B, T = _check_prompt(idx, context)
    eos, eos_t, gen = stop_rules(idx, cfg, eos_id)
    max_len = cache_length(context, T, cfg.max_new_tokens)
    prefix = cache
    if prefix is None:
        kv = model.new_cache(B, max_len=max_len)
        logits = model(idx, cache=kv, last_only=True)[:, -1]  # (B, V)
    else:
        if B != 1:
            raise GenerationError(f"a PrefixCache holds one sequence; got a batch of {B}")
        keep = prefix.prepare(idx[0].tolist(), max_len)
        owner = prefix.owner = object()  # a later generation over this cache takes it over
        kv = prefix.cache
        max_len = min(context, kv.max_len)  # refill only at the context, as without it
        logits = model(idx[:, keep:], cache=kv, last_only=True)[:, -1]
        prefix.fed_tokens(idx[0, keep:].tolist())
    history = idx  # (B, T + step): every token so far, for the repetition penalty
    done = torch.zeros(B, dtype=torch.bool, device=idx.device)
    for step in range(cfg.max_new_tokens):
        nxt = _next_tokens(logits, history, cfg, gen, eos, eos_t, done)  # (B,)
        yield nxt
        if step == cfg.max_new_tokens - 1 or bool(done.all()):
            return  # the last token is not fed back
        history = torch.cat([history, nxt[:, None]], dim=1)
        window = history[:, -context:]
        if prefix is not None and prefix.owner is not owner:
            raise GenerationError("another generation has used this PrefixCache since this one "
                                  "began; finish (or close) one generation before the next")
        if kv.length >= max_len:  # full (only at the context): refill from its last half
            window = window[:, -(context // 2):]
            if prefix is None:
                kv = model.new_cache(B, max_len=max_len)
            else:
                prefix.ids, kv.length = [], 0
            logits = model(window, cache=kv, last_only=True)[:, -1]
            fed = window[0]
        else:
            logits = _step(model, nxt[:, None], kv)
            fed = nxt
        if prefix is not None:
            prefix.fed_tokens(fed.tolist())


def _step(model: nn.Module, ids: torch.Tensor, kv) -> torch.Tensor:
    """One decoding step, ids (B, 1) -> logits (B, V): through the model's fast step when one
    is attached and takes this cache (``lmforge.inference.compiled``), else the model."""
    fast = getattr(model, "fast_decode", None)
    if fast is not None and fast.accepts(ids, kv):
        return fast(ids, kv)
    return model(ids, cache=kv, last_only=True)[:, -1]


def feed_xl(model: nn.Module, memory, ids: torch.Tensor) -> torch.Tensor:
    """Run ids (B, n) through an XL model in pieces that fill the memory's current segment;
    the logits of the last position, (B, V)."""
    logits = None
    while ids.shape[1]:
        piece, ids = ids[:, :memory.room], ids[:, memory.room:]
        logits = model(piece, memory=memory, last_only=True)[:, -1]  # (B, V)
    return logits


def generate_xl(model: nn.Module, idx: torch.Tensor, cfg: GenerationConfig,
                eos_id: EosIds = None, cache: PrefixCache | None = None) -> Iterator[torch.Tensor]:
    """:func:`generate_tokens` for a Transformer-XL model: the prompt (any length) is read in
    segments of the context length with the memory carried; each new token joins the current
    segment, and a full segment becomes memory, as in training. A query sees exactly what it
    would in training: the memory and the segment so far. A ``cache`` is reset, not used."""
    if cache is not None:
        cache.bypass(idx.shape[1])
    B, T = idx.shape
    if T == 0:
        raise GenerationError("the prompt is empty; give at least one token")
    eos, eos_t, gen = stop_rules(idx, cfg, eos_id)
    memory = model.new_memory()
    logits = feed_xl(model, memory, idx)
    history = idx
    done = torch.zeros(B, dtype=torch.bool, device=idx.device)
    for step in range(cfg.max_new_tokens):
        nxt = _next_tokens(logits, history, cfg, gen, eos, eos_t, done)  # (B,)
        yield nxt
        if step == cfg.max_new_tokens - 1 or bool(done.all()):
            return  # the last token is not fed back
        history = torch.cat([history, nxt[:, None]], dim=1)
        logits = feed_xl(model, memory, nxt[:, None])


def generate(model: nn.Module, idx: torch.Tensor, cfg: GenerationConfig,
             eos_id: EosIds = None) -> torch.Tensor:
    """Prompt ids (B, T) -> generated ids (B, N) (without the prompt)."""
    out = list(generate_tokens(model, idx, cfg, eos_id))
    if not out:
        return idx.new_zeros(idx.shape[0], 0)
    return torch.stack(out, dim=1)


def stream_ids(model: nn.Module, tokenizer, ids: Sequence[int], cfg: GenerationConfig,
               eos_id: EosIds = None, cache: PrefixCache | None = None) -> Iterator[str]:
    """Yield pieces of generated text as they are produced, for the prompt token ids ``ids``
    (batch 1). An end-of-sequence id ends the stream (it is not part of the text); stop
    strings end it too, and the text is cut just before them. ``cache``: a
    :class:`PrefixCache` to reuse (see :func:`generate_tokens`)."""
    device = next(model.parameters()).device
    idx = torch.tensor([list(ids)], dtype=torch.long, device=device)
    stops = set(_eos_list(eos_id)) if cfg.stop_at_eos else set()
    new: list[int] = []
    emitted = ""
    for tok in generate_tokens(model, idx, cfg, eos_id, cache=cache):
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
