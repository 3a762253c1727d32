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
from .sampling import next_tokens, stop_rules

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
        cache.bypass(idx.shape[1])
    B, T = idx.shape
    if T == 0:
        raise GenerationError("the prompt is empty; give at least one token")
    eos, eos_t, gen = stop_rules(idx, cfg, eos_id)
    logits, state = model(idx, return_state=True, last_only=True)  # prefill: (B, 1, V), state
    history = idx  # (B, T + step): every token so far, for the repetition penalty
    done = torch.zeros(B, dtype=torch.bool, device=idx.device)
    for step in range(cfg.max_new_tokens):
        nxt = next_tokens(logits[:, -1], history, cfg, gen, eos, eos_t, done)  # (B,)
        yield nxt
        if step == cfg.max_new_tokens - 1 or bool(done.all()):
            return  # the last token is not fed back
        history = torch.cat([history, nxt[:, None]], dim=1)
        logits, state = model(nxt[:, None], state=state, return_state=True)  # (B, 1, V)
