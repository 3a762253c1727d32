"""Reformer's LSH attention (Kitaev et al. 2020): ``attention = "lsh"``. See docs/attention.md.

Each query attends only to the keys that hash near it. Vectors are hashed by random rotations
(``argmax([xR; -xR])`` over ``n_buckets`` buckets, ``n_hashes`` independent rounds); in each
round the positions are sorted by (bucket, position), cut into chunks of ``chunk_length``, and
each chunk of queries attends to the keys of its own chunk and of the chunk before it. The
rounds are combined by their softmax normalisers: out = sum_r exp(lse_r - logsumexp_r lse_r)
out_r, so a round that found larger scores counts more (a key found in several rounds is not
de-duplicated, as in Hugging Face's implementation).

Shared query/key (``shared_qk``, the Reformer's choice): the backend receives q and k from two
projections; it uses **k** (the key projection, with RoPE) as the shared vector: queries are
k at the query positions and keys are k normalised to length sqrt(head_dim). Using k rather
than q keeps KV-cache decoding possible (the cache holds k for every past position, never q);
the layer's ``q_proj`` then gets a zero gradient (it stays in the graph so DDP sees it used).
Because a shared vector's best match is itself, a position attends to itself only when it can
see nothing else (self gets no weight unless it is the only visible key).

Deviations from the paper, all documented in docs/attention.md: the chunk before the first
does not wrap around to the last; padded keys get a bucket of their own after all real ones
(so the real positions sort, chunk and attend exactly as without the padding); a causal layer
never attends to a later key (its gradient to later inputs is exactly zero), though which
earlier keys share a query's chunks depends on where later positions hash, as in the paper.
When the queries are not the whole sequence (KV-cache decoding, a ``q_offset``), each query
attends to every visible key that shares one of its buckets (no chunks: few queries), falling
back to every visible key in a round where none does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import FieldError
from ..errors import ConfigError
from .attention_backends import register_attention

__all__ = ["LSHSettings", "LSHState", "hash_buckets", "lsh_attention", "plain_inputs"]

NEG = -1e30
"""Score of a masked key (finite in float32: a row with nothing visible stays NaN-free)."""


@dataclass(frozen=True)
class LSHSettings:
    """``[model.attention_options]`` of ``attention = "lsh"``."""

    n_buckets: int = 32
    """Hash buckets per round: 1, or an even number (random rotations give ±projections).
    About 2 x sequence length / chunk_length is the Reformer's choice."""
    n_hashes: int = 2
    """Independent hash rounds; more rounds = closer to full attention, linearly slower."""
    chunk_length: int = 64
    """Positions per chunk of the sorted sequence; each chunk attends to itself and the chunk
    before it (2 x chunk_length keys per query)."""
    shared_qk: bool = True
    """Queries and keys are one vector (the key projection; q_proj gets a zero gradient) and a
    position attends to itself only when nothing else is visible. False: q and k hashed apart."""

    def __post_init__(self):
        for name in ("n_buckets", "n_hashes", "chunk_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise FieldError(self, name, f"must be a positive integer, got {value!r}")
        if self.n_buckets > 1 and self.n_buckets % 2:
            raise FieldError(self, "n_buckets", f"must be 1 or even, got {self.n_buckets}")


class LSHState(nn.Module):
    """The layer's random rotations, a buffer drawn once (torch's RNG, like the weights) and
    saved with the model, so hashing is deterministic in evaluation and after loading."""

    def __init__(self, settings: LSHSettings, n_head: int, head_dim: int):
        super().__init__()
        self.settings = settings
        rot = torch.randn(n_head, settings.n_hashes, head_dim, max(1, settings.n_buckets // 2))
        self.register_buffer("rotations", rot)  # (H, R, D, n_buckets/2)


def make_lsh_state(settings, n_head: int, head_dim: int, context_length: int) -> LSHState:
    return LSHState(settings or LSHSettings(), n_head, head_dim)


def plain_inputs(name: str, mask, bias, options) -> torch.Tensor | None:
    """The (B, Tk) real-key mask of a backend that reads only padding and ``options.causal``
    (not the full mask); refuses what such a backend cannot honour, naming the fix."""
    if bias is not None:
        raise ConfigError(f"model.positional: attention {name!r} cannot add ALiBi biases; "
                          "use positional = \"rope\" or \"learned\"")
    if options.window > 0:
        raise ConfigError(f"model.attention_window: attention {name!r} has no window; set "
                          "attention_window = 0")
    if mask is not None and options.padding is None and mask.dim() > 2:
        raise ConfigError(f"model.attention: {name!r} reads only key-padding and causal masks, "
                          "and this call has a per-query mask; use attention = \"auto\"")
    return options.padding


@torch.no_grad()
def hash_buckets(x: torch.Tensor, rotations: torch.Tensor, n_buckets: int) -> torch.Tensor:
    """Bucket of every vector in every round: argmax of [xR; -xR] over the normalised x.
    (B, H, T, D), (H, R, D, n_buckets/2) -> (B, H, R, T) long."""
    B, H, T, _ = x.shape
    R = rotations.shape[1]
    if n_buckets == 1:
        return torch.zeros(B, H, R, T, dtype=torch.long, device=x.device)
    xn = F.normalize(x.float(), dim=-1)
    proj = torch.einsum("bhtd,hrdk->bhrtk", xn, rotations.float())  # (B, H, R, T, nb/2)
    return torch.cat([proj, -proj], -1).argmax(-1)


def _attend(scores, ok, v, dropout_p):
    """Softmax of ``scores`` over the keys ``ok`` allows, its log-normaliser, and the output.
    A row with no visible key gives output 0 and log-normaliser about NEG."""
    s = scores.to(torch.promote_types(scores.dtype, torch.float32)).masked_fill(~ok, NEG)
    lse = torch.logsumexp(s, -1)  # (..., Tq)
    w = torch.softmax(s, -1) * ok.any(-1, keepdim=True)  # (..., Tq, Tk)
    if dropout_p > 0:
        w = F.dropout(w, dropout_p)
    return w.to(v.dtype) @ v, lse


def _no_self(ok: torch.Tensor, is_self: torch.Tensor) -> torch.Tensor:
    """The Reformer rule: drop self where anything else is visible."""
    others = ok & ~is_self
    return torch.where(others.any(-1, keepdim=True), others, ok)


def _combine(out: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
    """Rounds (dim 2) weighted by their normalisers.
    (B, H, R, T, D), (B, H, R, T) -> (B, H, T, D)."""
    w = torch.softmax(lse, dim=2)  # (B, H, R, T)
    return (out * w.unsqueeze(-1).to(out.dtype)).sum(2)


def _sort(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, H, T, D) in each round's order idx (B, H, R, T) -> (B, H, R, T, D)."""
    B, H, R, T = idx.shape
    return x.unsqueeze(2).expand(B, H, R, T, x.shape[-1]).gather(
        3, idx.unsqueeze(-1).expand(B, H, R, T, x.shape[-1]))


def _chunks(x: torch.Tensor, n: int, c: int, fill) -> torch.Tensor:
    """(B, H, R, T, ...) padded with ``fill`` to n*c positions -> (B, H, R, n, c, ...)."""
    T = x.shape[3]
    if n * c > T:
        pad = x.new_full((*x.shape[:3], n * c - T, *x.shape[4:]), fill)
        x = torch.cat([x, pad], 3)
    return x.reshape(*x.shape[:3], n, c, *x.shape[4:])


def _look_back(x: torch.Tensor, fill) -> torch.Tensor:
    """Each chunk with the chunk before it (the first: a chunk of ``fill``), keys first-to-last.
    (B, H, R, n, c, ...) -> (B, H, R, n, 2c, ...); one chunk stays as it is."""
    if x.shape[3] == 1:
        return x
    prev = torch.cat([torch.full_like(x[:, :, :, :1], fill), x[:, :, :, :-1]], 3)
    return torch.cat([prev, x], 4)


def _chunked(q, k, v, qb, kb, s: LSHSettings, causal: bool, real):
    """Self-attention of all T positions through sorted chunks. q, k, v (B, H, T, D); qb, kb
    (B, H, R, T) buckets; real (B, T) bool or None. Returns (B, H, R, T, D), (B, H, R, T)."""
    B, H, T, D = q.shape
    pos = torch.arange(T, device=q.device)
    qi = (qb * T + pos).argsort(-1)  # (B, H, R, T): each round's order
    ki = qi if s.shared_qk else (kb * T + pos).argsort(-1)
    c = min(s.chunk_length, T)
    n = -(-T // c)
    qs = _chunks(_sort(q, qi), n, c, 0.0)  # (B, H, R, n, c, D)
    ks = _look_back(_chunks(_sort(k, ki), n, c, 0.0), 0.0)  # (B, H, R, n, 2c, D)
    vs = _look_back(_chunks(_sort(v, ki), n, c, 0.0), 0.0)
    kvalid = torch.ones_like(ki, dtype=torch.bool) if real is None \
        else real[:, None, None, :].expand_as(ki).gather(3, ki)  # (B, H, R, T)
    kvalid = _look_back(_chunks(kvalid, n, c, False), False)  # (B, H, R, n, 2c)
    qpos = _chunks(qi, n, c, -1)  # (B, H, R, n, c)
    kpos = _look_back(_chunks(ki, n, c, T), T)  # (B, H, R, n, 2c)
    scores = qs @ ks.transpose(-2, -1) / math.sqrt(D)  # (B, H, R, n, c, 2c)
    ok = kvalid.unsqueeze(-2)  # (B, H, R, n, 1, 2c)
    if causal:
        ok = ok & (kpos.unsqueeze(-2) <= qpos.unsqueeze(-1))
    if s.shared_qk:
        ok = _no_self(ok.expand_as(scores), kpos.unsqueeze(-2) == qpos.unsqueeze(-1))
    return scores, ok, vs, qi, (B, H, n * c, D)


def _unsort(out: torch.Tensor, lse: torch.Tensor, qi: torch.Tensor, shape):
    """Chunked outputs back in position order: (B, H, R, n, c, D) -> (B, H, R, T, D)."""
    B, H, P, D = shape
    R, T = qi.shape[2], qi.shape[3]
    inv = qi.argsort(-1)  # (B, H, R, T): where each position sits in its round's order
    out = out.reshape(B, H, R, P, D).gather(3, inv.unsqueeze(-1).expand(B, H, R, T, D))
    return out, lse.reshape(B, H, R, P).gather(3, inv)


def _dense(q, k, v, qb, kb, s: LSHSettings, causal: bool, real, off: int, dropout_p):
    """Few queries (decoding): each attends to the visible keys sharing its bucket, per round.
    q (B, H, Tq, D), k, v (B, H, Tk, D). Returns (B, H, R, Tq, D), (B, H, R, Tq)."""
    Tq, Tk, D = q.shape[2], k.shape[2], q.shape[3]
    qpos = torch.arange(Tq, device=q.device)[:, None] + off
    kpos = torch.arange(Tk, device=q.device)[None, :]
    ok = torch.ones(1, 1, 1, Tq, Tk, dtype=torch.bool, device=q.device)
    if real is not None:
        ok = ok & real[:, None, None, None, :]
    if causal:
        ok = ok & (kpos <= qpos)
    same = ok & (qb.unsqueeze(-1) == kb.unsqueeze(-2))  # (B, H, R, Tq, Tk)
    ok = torch.where(same.any(-1, keepdim=True), same, ok)
    if s.shared_qk:
        ok = _no_self(ok, kpos == qpos)
    scores = (q @ k.transpose(-2, -1) / math.sqrt(D)).unsqueeze(2)  # (B, H, 1, Tq, Tk)
    return _attend(scores.expand(ok.shape), ok, v.unsqueeze(2), dropout_p)


@register_attention("lsh", native_causal=True, settings=LSHSettings, make_state=make_lsh_state)
def lsh_attention(q, k, v, *, mask, bias, dropout_p, need_weights, options):
    """Reformer LSH attention (module docstring): hashed, sorted, chunked, several rounds."""
    real = plain_inputs("lsh", mask, bias, options)  # (B, Tk) or None
    causal = options.causal or options.is_causal
    s = options.settings or LSHSettings()
    state = options.state
    if state is None:
        raise ValueError("attention 'lsh' needs its per-layer state (build the layer with "
                         "MultiHeadAttention, or pass options.state from make_lsh_state)")
    Tq, Tk, D = q.shape[2], k.shape[2], q.shape[3]
    off = options.query_offset(Tq, Tk)
    if off + Tq > Tk:
        raise ValueError(f"attention 'lsh': {Tq} queries from offset {off} exceed {Tk} keys")
    if s.shared_qk:
        # the shared vector at the query positions; q stays in the graph with a zero gradient
        # so data-parallel training sees q_proj used
        q = k[:, :, off:off + Tq] + 0.0 * q
        k = F.normalize(k, dim=-1) * math.sqrt(D)
    qb = hash_buckets(q, state.rotations, s.n_buckets)  # (B, H, R, Tq)
    kb = qb if s.shared_qk and Tq == Tk else hash_buckets(k, state.rotations, s.n_buckets)
    if real is not None:  # padded keys: a bucket of their own, sorted after the real ones
        kb = kb.masked_fill(~real[:, None, None, :], s.n_buckets)
        if s.shared_qk and Tq == Tk:
            qb = kb
    if Tq == Tk and off == 0:
        scores, ok, vs, qi, shape = _chunked(q, k, v, qb, kb, s, causal, real)
        out, lse = _attend(scores, ok, vs, dropout_p)  # (B, H, R, n, c, D), (B, H, R, n, c)
        out, lse = _unsort(out, lse, qi, shape)
    else:
        out, lse = _dense(q, k, v, qb, kb, s, causal, real, off, dropout_p)
    return _combine(out, lse).to(v.dtype), None
