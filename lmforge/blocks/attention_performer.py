"""Performer attention (Choromanski et al. 2021, FAVOR+): ``attention = "performer"``.

softmax(q·k / sqrt(d)) = exp(q'·k') with q' = q / d^(1/4), k' = k / d^(1/4), and
exp(x·y) = E_w[phi(x) phi(y)] for the positive random features
phi(x) = exp(w·x - |x|²/2) / sqrt(m), w ~ N(0, I) drawn as blocks of orthogonal rows (with
chi-distributed lengths). So attention is approximated in time and memory linear in the length:

    out_i = phi(q_i) · S / phi(q_i) · z,   S = sum_j phi(k_j) v_jᵀ (m, D),  z = sum_j phi(k_j)

with the sums over every real key (non-causal) or over keys j <= i (causal: prefix sums, run
chunk by chunk with a carried state, exact within a chunk). Padded keys get phi = 0. The
features are a buffer of the layer (``make_state``), redrawn every ``redraw_interval``
training-mode calls (0 = never) and saved with the model.

Numerics: features are computed in float32 with a stabiliser subtracted in the exponent (the
row max for queries, the running max over the keys seen so far for keys); it cancels between
numerator and denominator and carries no gradient, so a causal output's gradient with respect
to later positions is exactly zero. No attention matrix exists: ``dropout_p`` is not applied.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import FieldError
from .attention_backends import register_attention
from .attention_lsh import plain_inputs

__all__ = ["PerformerSettings", "PerformerState", "orthogonal_features", "performer_attention"]


@dataclass(frozen=True)
class PerformerSettings:
    """``[model.attention_options]`` of ``attention = "performer"``."""

    num_features: int = 256
    """m: random features per layer (shared by its heads); the approximation error falls like
    1/sqrt(m), the cost grows like m."""
    redraw_interval: int = 1000
    """Draw new features every this many training-mode forward calls of the layer (a training
    step with gradient accumulation is several calls); 0 = keep the first draw."""
    chunk_length: int = 128
    """Causal layers: positions per chunk of the prefix sums (exact inside a chunk, a carried
    (m, D) state between chunks); memory grows with it, Python overhead shrinks."""

    def __post_init__(self):
        for name, low in (("num_features", 1), ("redraw_interval", 0), ("chunk_length", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise FieldError(self, name, f"must be an integer >= {low}, got {value!r}")


def orthogonal_features(m: int, d: int, device=None) -> torch.Tensor:
    """(m, d): rows drawn as ceil(m/d) blocks of d orthogonal directions, each row scaled to
    the length of a d-dimensional Gaussian vector (FAVOR+'s orthogonal random features)."""
    blocks = []
    for _ in range(-(-m // d)):
        qmat, r = torch.linalg.qr(torch.randn(d, d, device=device))
        blocks.append((qmat * torch.diagonal(r).sign()).T)  # orthonormal rows, Haar-distributed
    w = torch.cat(blocks)[:m]
    return w * torch.randn(m, d, device=device).norm(dim=1, keepdim=True)


class PerformerState(nn.Module):
    """The layer's features (a buffer, saved with the model) and its training-call counter."""

    def __init__(self, settings: PerformerSettings, head_dim: int):
        super().__init__()
        self.settings = settings
        self.register_buffer("features", orthogonal_features(settings.num_features, head_dim))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def step(self) -> torch.Tensor:
        """The features for this call; in training, redraws them every ``redraw_interval``
        calls (the first call uses the initial draw)."""
        every = self.settings.redraw_interval
        if self.training and every > 0:
            if int(self.calls) > 0 and int(self.calls) % every == 0:
                m, d = self.features.shape
                self.features.copy_(orthogonal_features(m, d, self.features.device))
            self.calls += 1
        return self.features


def make_performer_state(settings, n_head: int, head_dim: int,
                         context_length: int) -> PerformerState:
    return PerformerState(settings or PerformerSettings(), head_dim)


def _exponent(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """w·x' - |x'|²/2 with x' = x / d^(1/4), in float32. (B, H, T, D) -> (B, H, T, m)."""
    x = x.float() * x.shape[-1] ** -0.25
    return x @ w.float().T - (x * x).sum(-1, keepdim=True) / 2


def _query_features(q: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    e = _exponent(q, w)  # (B, H, Tq, m); the row max cancels in each query's ratio
    return torch.exp(e - e.amax(-1, keepdim=True).detach())


def _key_exponent(k, w, real):
    """Key exponents with padded keys at -inf (their features are 0). (B, H, Tk, m)."""
    e = _exponent(k, w)
    if real is not None:
        e = e.masked_fill(~real[:, None, :, None], float("-inf"))
    return e


def _max(e: torch.Tensor) -> torch.Tensor:
    """Detached max over keys and features (B, H, 1, 1); 0 where every key is padding."""
    m = e.amax((-2, -1), keepdim=True).detach()
    return torch.where(torch.isfinite(m), m, torch.zeros_like(m))


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return num / den.clamp_min(torch.finfo(torch.float32).tiny).unsqueeze(-1)


def _bidirectional(pq, ek, v):
    """Every query against every key: (phi(K)ᵀ V) first, linear in the length."""
    pk = torch.exp(ek - _max(ek))  # (B, H, Tk, m); padded keys 0
    S = pk.transpose(-2, -1) @ v.float()  # (B, H, m, D)
    den = (pq @ pk.sum(-2).unsqueeze(-1)).squeeze(-1)  # (B, H, Tq)
    return _ratio(pq @ S, den)  # (B, H, Tq, D)


def _causal(pq, ek, v, c: int, prefix=None):
    """Query i against keys j <= i (queries and keys aligned), chunk by chunk: the carried
    (S, z) with a running stabiliser, plus the exact lower triangle inside each chunk.
    ``prefix`` = (S, z, stabiliser) of keys before the first query (KV-cache decoding)."""
    B, H, _, m = pq.shape
    D = v.shape[-1]
    S = pq.new_zeros(B, H, m, D)
    z = pq.new_zeros(B, H, m)
    top = pq.new_full((B, H, 1, 1), float("-inf"))
    if prefix is not None:
        S, z, top = prefix
    tril = torch.ones(c, c, dtype=torch.bool, device=pq.device).tril()
    outs = []
    # split, not slices: a slice's backward writes a zero tensor of the whole length, which
    # made the backward quadratic (T / c of them); split's backward concatenates once
    for e, vc, qc in zip(ek.split(c, 2), v.float().split(c, 2), pq.split(c, 2)):
        new = torch.maximum(top, e.amax((-2, -1), keepdim=True).detach())
        new = torch.where(torch.isfinite(new), new, torch.zeros_like(new))  # (B, H, 1, 1)
        scale = torch.exp(torch.where(torch.isfinite(top), top - new, torch.full_like(top, -1e30)))
        S, z = S * scale, z * scale[..., 0]  # the carried sums, re-stabilised
        pk = torch.exp(e - new)  # (B, H, c', m)
        n = e.shape[2]
        a_in = (qc @ pk.transpose(-2, -1)).masked_fill(~tril[:n, :n], 0.0)  # (B, H, c', c')
        num = qc @ S + a_in @ vc
        den = (qc @ z.unsqueeze(-1)).squeeze(-1) + a_in.sum(-1)
        outs.append(_ratio(num, den))
        S = S + pk.transpose(-2, -1) @ vc
        z = z + pk.sum(-2)
        top = new
    return torch.cat(outs, 2)


@register_attention("performer", native_causal=True, settings=PerformerSettings,
                    make_state=make_performer_state)
def performer_attention(q, k, v, *, mask, bias, dropout_p, need_weights, options):
    """FAVOR+ linear attention (module docstring); causal by prefix sums."""
    real = plain_inputs("performer", mask, bias, options)  # (B, Tk) or None
    causal = options.causal or options.is_causal
    s = options.settings or PerformerSettings()
    if options.state is None:
        raise ValueError("attention 'performer' needs its per-layer state (build the layer "
                         "with MultiHeadAttention, or pass options.state)")
    w = options.state.step()  # (m, D)
    Tq, Tk = q.shape[2], k.shape[2]
    pq = _query_features(q, w)  # (B, H, Tq, m)
    ek = _key_exponent(k, w, real)  # (B, H, Tk, m)
    if not causal:
        return _bidirectional(pq, ek, v).to(v.dtype), None
    off = options.query_offset(Tq, Tk)
    if off + Tq != Tk:
        raise ValueError(f"causal performer: the {Tq} queries must be the last of the {Tk} "
                         f"keys (query offset {off})")
    prefix = None
    if off > 0:  # KV-cache decoding: the keys before the first query, summed once
        e0 = ek[:, :, :off]
        top = _max(e0)
        pk0 = torch.exp(e0 - top)
        prefix = (pk0.transpose(-2, -1) @ v[:, :, :off].float(), pk0.sum(-2), top)
    out = _causal(pq, ek[:, :, off:], v[:, :, off:], s.chunk_length, prefix)
    return out.to(v.dtype), None
