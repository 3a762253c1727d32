"""Choosing the next token from logits: repetition penalty, greedy, temperature, top-k,
top-p (nucleus)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

EosIds = int | Sequence[int] | None
"""One end-of-sequence id, several (a chat model may end a turn with any of them), or none."""


def eos_list(eos_id: EosIds) -> list[int]:
    """``eos_id`` as a list of ids (empty for None)."""
    if eos_id is None:
        return []
    return [int(eos_id)] if isinstance(eos_id, int) else [int(i) for i in eos_id]


def stop_rules(idx: torch.Tensor, cfg, eos_id: EosIds):
    """What every generation loop starts from: (the EOS ids it stops at — none when
    ``cfg.stop_at_eos`` is off —, them as a tensor on ``idx``'s device, the generator seeded
    by ``cfg.seed``)."""
    eos = eos_list(eos_id) if cfg.stop_at_eos else []
    return eos, torch.tensor(eos, dtype=torch.long, device=idx.device), \
        make_generator(cfg.seed, idx.device)


def make_generator(seed: int | None, device) -> torch.Generator | None:
    """A seeded generator on ``device`` (None: the global RNG)."""
    if seed is None:
        return None
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set to -inf every logit outside the top-k and outside the smallest set of tokens whose
    probability mass reaches top_p. logits (B, V) -> (B, V)."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        # drop a token when the mass *before* it already reaches top_p (keeps at least one)
        drop_sorted = probs.cumsum(-1) - probs >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def penalize_repetition(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty, as transformers applies it: the logit of every token already
    in ``seen`` (B, T) is divided by ``penalty`` when positive and multiplied by it when
    negative (1 = unchanged). logits (B, V) -> (B, V)."""
    if penalty == 1.0:
        return logits
    score = logits.gather(-1, seen)  # (B, T)
    score = torch.where(score < 0, score * penalty, score / penalty)
    return logits.scatter(-1, seen, score)


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """logits (B, V) -> next token ids (B,). temperature 0 = greedy (argmax)."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = filter_logits(logits.float() / temperature, top_k, top_p)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def next_tokens(logits, history, cfg, gen, eos: list[int], eos_t: torch.Tensor,
                done: torch.Tensor) -> torch.Tensor:
    """One decoding step's tokens (B,) from the last logits (B, V): repetition penalty over
    ``history`` (B, T), sampling by ``cfg`` (a GenerationConfig), and rows that have ended
    (``done``, updated in place) kept at EOS. Shared by every generation loop."""
    logits = penalize_repetition(logits, history, cfg.repetition_penalty)
    nxt = sample_next(logits, cfg.temperature, cfg.top_k, cfg.top_p, gen)  # (B,)
    if eos:
        nxt = torch.where(done, torch.full_like(nxt, eos[0]), nxt)
        done |= torch.isin(nxt, eos_t)
    return nxt
