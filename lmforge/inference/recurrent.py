"""Generation with a recurrent language model (``model.arch`` = rnn, lstm or gru;
:class:`~lmforge.models.RecurrentLM`): the recurrent state replaces the KV cache.

The prompt is read once (prefill), leaving the state after its last token; then each step
feeds only the newest token with that state. The state has a fixed size, so there is no
context limit and nothing to refill: a prompt of any length is read whole, and generation may
go on for as long as asked (``model.context_length`` is only the length trained on).
:func:`~lmforge.inference.generate_tokens` sends a recurrent model here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import GenerationError
from ..models.config import RECURRENT_ARCHS
from .sampling import penalize_repetition, sample_next

if TYPE_CHECKING:  # (type hints only: generate.py imports this module)
    from .generate import GenerationConfig, PrefixCache


def is_recurrent(model: nn.Module) -> bool:
    """Whether ``model`` generates with a recurrent state (an rnn/lstm/gru language model)."""
    return getattr(getattr(model, "cfg", None), "arch", "") in RECURRENT_ARCHS


@torch.no_grad()
def generate_recurrent(model: nn.Module, idx: torch.Tensor, cfg: GenerationConfig,
                       eos_id: int | Sequence[int] | None = None,
                       cache: PrefixCache | None = None) -> Iterator[torch.Tensor]:
    """:func:`~lmforge.inference.generate_tokens` for a recurrent LM: yield the next tokens
    (B,) one step at a time for prompts ``idx`` (B, T). A row that produced an ``eos_id``
    keeps yielding the first one; stops when all rows have (unless ``cfg.stop_at_eos`` is
    off) or after ``cfg.max_new_tokens``. A ``cache`` (:class:`PrefixCache`) is reset and not
    used: the whole prompt is read each time (it holds a KV cache, which this model has not)."""
    if cache is not None:
        cache.reset()
        cache.kept, cache.fed = 0, idx.shape[1]
    B, T = idx.shape
    if T == 0:
        raise GenerationError("the prompt is empty; give at least one token")
    eos = [] if eos_id is None or not cfg.stop_at_eos else \
        [int(eos_id)] if isinstance(eos_id, int) else [int(i) for i in eos_id]
    eos_t = torch.tensor(eos, dtype=torch.long, device=idx.device)
    gen = None
    if cfg.seed is not None:
        gen = torch.Generator(device=idx.device)
        gen.manual_seed(cfg.seed)
    logits, state = model(idx, return_state=True, last_only=True)  # prefill: (B, 1, V), state
    history = idx  # (B, T + step): every token so far, for the repetition penalty
    done = torch.zeros(B, dtype=torch.bool, device=idx.device)
    for step in range(cfg.max_new_tokens):
        nxt = sample_next(penalize_repetition(logits[:, -1], history, cfg.repetition_penalty),
                          cfg.temperature, cfg.top_k, cfg.top_p, gen)  # (B,)
        if eos:
            nxt = torch.where(done, torch.full_like(nxt, eos[0]), nxt)
            done |= torch.isin(nxt, eos_t)
        yield nxt
        if step == cfg.max_new_tokens - 1 or bool(done.all()):
            return  # the last token is not fed back
        history = torch.cat([history, nxt[:, None]], dim=1)
        logits, state = model(nxt[:, None], state=state, return_state=True)  # (B, 1, V)
