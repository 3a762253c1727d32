"""Attention backends: functions that compute softmax(Q Kᵀ / sqrt(d) + bias + mask) V, chosen
by name (``model.attention``).

Every backend has one signature::

    @register_attention("name")
    def my_attention(q, k, v, *, mask, bias, dropout_p, need_weights, options):
        ...
        return out, weights  # (B, H, Tq, D), (B, H, Tq, Tk) or None

  * ``q`` (B, H, Tq, D); ``k``, ``v`` (B, Hkv, Tk, D) — Hkv == H unless the backend is
    registered with ``native_gqa=True`` (then Hkv divides H: grouped-query attention).
  * ``mask``: bool, True = may attend, broadcastable to (B, H, Tq, Tk), or None (attend to
    everything). It is already complete: padding, the causal part (with the KV-cache offset),
    the sliding window, and no row is all False (see :func:`prepare_mask`).
  * ``bias``: float, added to the scores (ALiBi), broadcastable to (B, H, Tq, Tk), or None.
  * ``dropout_p``: dropout on the attention weights (0 outside training).
  * ``need_weights``: the caller wants the weights; only backends registered with
    ``returns_weights=True`` are asked (others are replaced by ``explicit`` for that call).
  * ``options``: :class:`AttentionOptions`, the static settings of the layer plus what the
    dispatcher tells the backend about this call.

:func:`attention_forward` is the one place that prepares masks and grouped-query keys/values
for every backend; the backends only compute. See docs/attention.md.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from ..config import from_dict
from ..errors import ConfigError
from .attention_blocked import banded_attention, blocked_pays, key_padding

AttentionFn = Callable[..., tuple[torch.Tensor, "torch.Tensor | None"]]


@dataclass(frozen=True)
class AttentionOptions:
    """Settings a backend may read. Static ones come from the model config (one instance per
    layer); the dispatcher fills the per-call ones. New backends (block-sparse, LSH, kernel
    features, low-rank) add their fields here, with a default that leaves the others as they
    are."""

    window: int = 0
    """Sliding window: in a causal layer each query attends to the last ``window`` positions,
    itself included (key j is visible from query i when 0 <= i - j < window); in a
    bidirectional one (an encoder) to the keys less than ``window`` positions away on either
    side (|i - j| < window); 0 = no window. Applied to the mask for every backend;
    ``sliding_window`` also skips the keys outside it."""
    q_offset: int | None = None
    """Position of the first query counted from the first key; None = Tk - Tq (the queries are
    the last Tq of the Tk positions: self-attention, with or without a KV cache). Positions are
    absolute, so a window stays exact when decoding past it."""
    is_causal: bool = False
    """Per call, set by the dispatcher: True only when ``mask`` is None and the attention is
    plain causal with Tq == Tk, for a backend registered with ``native_causal=True`` (torch's
    flash kernel does it without a mask). Other backends always get a materialised mask."""

    settings: Any = None
    """The backend's own settings (an instance of the dataclass it registered with
    ``settings=``, built from ``model.attention_options``), or None."""
    state: Any = None
    """The backend's per-layer module (parameters or buffers, from its ``make_state``), or
    None. It is a submodule of the attention layer, so it is trained and saved with it."""
    causal: bool = False
    """Per call: the layer attends causally (a decoder). The mask already says so; backends
    that do not read the mask (kernel features, low-rank, hashing) read this."""
    padding: torch.Tensor | None = None
    """Per call: (B, Tk) bool, True = a real key, when the caller's mask is a padding mask;
    else None. For backends that do not read the full mask."""

    def query_offset(self, q_len: int, k_len: int) -> int:
        return k_len - q_len if self.q_offset is None else self.q_offset


@dataclass(frozen=True)
class AttentionBackend:
    name: str
    fn: AttentionFn
    native_gqa: bool = False
    """Takes keys/values with fewer heads than the queries (else they are repeated for it)."""
    native_causal: bool = False
    """Understands ``options.is_causal`` with ``mask=None`` (else the causal mask is built)."""
    returns_weights: bool = False
    """Can return the attention weights (else ``explicit`` answers calls that need them)."""
    causal: bool = True
    """Has a causal form; a decoder (causal) model with a backend without one is refused."""
    settings: type | None = None
    """Dataclass of the backend's options (``model.attention_options``), or None for none."""
    make_state: Callable[..., Any] | None = None
    """``make_state(settings, n_head, head_dim, context_length)`` -> an ``nn.Module`` holding
    the backend's per-layer parameters/buffers (or None); see :attr:`AttentionOptions.state`."""
    own_mask: bool = False
    """Builds the causal and window part of the mask itself (from ``options.causal``,
    ``window``, ``q_offset``; :func:`prepare_mask` does it): it gets only the caller's mask
    (padding), so a banded backend never materialises a (Tq, Tk) mask."""


ATTENTION_BACKENDS: dict[str, AttentionBackend] = {}
"""Every registered backend by name; ``model.attention`` is one of these names."""


def register_attention(name: str, *, native_gqa: bool = False, native_causal: bool = False,
                       returns_weights: bool = False, causal: bool = True,
                       settings: type | None = None, make_state: Callable[..., Any] | None = None,
                       own_mask: bool = False) -> Callable[[AttentionFn], AttentionFn]:
    """Decorator: register ``fn`` as attention backend ``name`` (replacing one of that name).
    See :class:`AttentionBackend` for what each keyword declares."""
    def add(fn: AttentionFn) -> AttentionFn:
        ATTENTION_BACKENDS[name] = AttentionBackend(name, fn, native_gqa, native_causal,
                                                    returns_weights, causal, settings, make_state,
                                                    own_mask)
        return fn
    return add


def backend_settings(name: str, table: dict | None) -> Any:
    """The settings instance of backend ``name`` from ``model.attention_options`` (a table,
    or None for the defaults); unknown keys and bad values raise ConfigError naming them."""
    entry = get_backend(name)
    if entry.settings is None:
        if table:
            raise ConfigError(f"model.attention_options: attention {name!r} takes no options; "
                              "remove the table")
        return None
    return from_dict(entry.settings, dict(table or {}), "model.attention_options")


def unknown_backend_message(name: object) -> str | None:
    """Why ``name`` is not a backend (with a close match), or None if it is one."""
    if isinstance(name, str) and name in ATTENTION_BACKENDS:
        return None
    close = difflib.get_close_matches(str(name), ATTENTION_BACKENDS, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return (f"unknown attention backend {name!r}; {hint}registered: "
            f"{', '.join(sorted(ATTENTION_BACKENDS))}")


def get_backend(name: str) -> AttentionBackend:
    if (problem := unknown_backend_message(name)) is not None:
        raise ConfigError(problem)
    return ATTENTION_BACKENDS[name]


# --- the shared preparation: masks and grouped-query keys/values --------------------------

def _distance(q_len: int, k_len: int, device, offset: int | None) -> torch.Tensor:
    """Query position - key position, query i at offset + i (offset default k_len - q_len,
    the last q_len of k_len positions).  # (Tq, Tk)"""
    offset = k_len - q_len if offset is None else offset
    return torch.arange(q_len, device=device)[:, None] + offset - torch.arange(k_len,
                                                                              device=device)


def causal_mask(q_len: int, k_len: int, device=None, offset: int | None = None,
                window: int = 0) -> torch.Tensor:
    """Query i (at position offset + i; offset default k_len - q_len, the last q_len of k_len
    positions) may see keys j <= offset + i, and with a ``window`` only those with
    offset + i - j < window.  # (Tq, Tk)"""
    dist = _distance(q_len, k_len, device, offset)
    allowed = dist >= 0
    return allowed & (dist < window) if window > 0 else allowed


def window_mask(q_len: int, k_len: int, window: int, device=None,
                offset: int | None = None) -> torch.Tensor:
    """A bidirectional window: query i (at position offset + i) may see the keys j with
    |offset + i - j| < window.  # (Tq, Tk)"""
    return _distance(q_len, k_len, device, offset).abs() < window


def prepare_mask(q_len: int, k_len: int, mask: torch.Tensor | None, is_causal: bool,
                 options: AttentionOptions, device=None) -> torch.Tensor | None:
    """The complete boolean mask (broadcastable to (B, H, Tq, Tk)) or None: ``mask`` (padding)
    and the causal part with the cache offset and window (a window in a causal layer is
    causal; in a bidirectional one it reaches both ways). A query that may attend to nothing
    (a padding position) attends to everything instead: its output is ignored, and this keeps
    softmax free of NaN."""
    offset = options.query_offset(q_len, k_len)
    if options.window > 0 and not is_causal:
        band = window_mask(q_len, k_len, options.window, device, offset)  # (Tq, Tk)
        mask = band if mask is None else mask & band
    elif options.window > 0 or (is_causal and (q_len > 1 or offset < k_len - 1)):
        cm = causal_mask(q_len, k_len, device, offset, options.window)  # (Tq, Tk)
        mask = cm if mask is None else mask & cm
    if mask is not None:
        mask = mask | ~mask.any(-1, keepdim=True)
    return mask


def repeat_kv(k: torch.Tensor, n_head: int) -> torch.Tensor:
    """(B, Hkv, T, D) -> (B, H, T, D): key/value head j serves query heads j*r .. j*r+r-1."""
    rep = n_head // k.shape[1]
    return k if rep == 1 else k.repeat_interleave(rep, dim=1)


def attention_forward(
    backend: str,
    q: torch.Tensor,  # (B, H, Tq, D)
    k: torch.Tensor,  # (B, Hkv, Tk, D), Hkv divides H
    v: torch.Tensor,  # (B, Hkv, Tk, D)
    *,
    mask: torch.Tensor | None = None,  # bool padding mask, True = attend, to (B, H, Tq, Tk)
    bias: torch.Tensor | None = None,  # float, added to the scores, to (B, H, Tq, Tk)
    is_causal: bool = False,
    dropout_p: float = 0.0,
    need_weights: bool = False,
    options: AttentionOptions = AttentionOptions(),
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Prepare the mask and keys/values for backend ``backend`` (by name) and call it. When
    the weights are needed and the backend cannot give them, ``explicit`` computes this call
    with the same mask. Returns (output (B, H, Tq, D), weights (B, H, Tq, Tk) or None); the
    weights only when ``need_weights``."""
    entry = get_backend(backend)
    if need_weights and not entry.returns_weights:
        entry = ATTENTION_BACKENDS["explicit"]
    Tq, Tk = q.shape[-2], k.shape[-2]
    if entry.settings is not None or entry.make_state is not None or entry.own_mask:
        padding = mask[:, 0, 0, :] if mask is not None and mask.dim() == 4 \
            and mask.shape[1] == mask.shape[2] == 1 else None  # (B, Tk)
        options = replace(options, causal=is_causal, padding=padding)
    if (entry.native_causal and is_causal and mask is None and bias is None and Tq == Tk
            and Tq > 1 and options.window == 0 and options.q_offset in (None, 0)):
        options = replace(options, is_causal=True)  # flash kernels: causal without a mask
    elif entry.own_mask:  # the padding only; the backend adds the causal part and window
        mask = prepare_mask(Tq, Tk, mask, False, replace(options, window=0), q.device)
    else:
        mask = prepare_mask(Tq, Tk, mask, is_causal, options, q.device)
    out, weights = call_backend(entry, q, k, v, mask=mask, bias=bias, dropout_p=dropout_p,
                                need_weights=need_weights, options=options)
    return out, weights if need_weights else None


def call_backend(entry: AttentionBackend, q, k, v, *, mask, bias, dropout_p, need_weights,
                 options):
    """Call ``entry`` with inputs prepared for the most capable backend, adapting them to what
    ``entry`` declares it handles (a materialised causal mask, repeated key/value heads)."""
    if options.is_causal and not entry.native_causal:
        mask = causal_mask(q.shape[-2], k.shape[-2], q.device)  # (Tq, Tk)
        options = replace(options, is_causal=False)
    if not entry.native_gqa:
        k, v = repeat_kv(k, q.shape[1]), repeat_kv(v, q.shape[1])  # (B, H, Tk, D)
    return entry.fn(q, k, v, mask=mask, bias=bias, dropout_p=dropout_p,
                    need_weights=need_weights, options=options)


def merge_mask(mask: torch.Tensor | None, bias: torch.Tensor | None, dtype: torch.dtype):
    """Fold a boolean mask into an additive float bias (0 / -inf), for kernels taking one."""
    if bias is None:
        return mask
    bias = bias.to(dtype)
    if mask is not None:
        bias = bias.masked_fill(~mask, float("-inf"))
    return bias


# --- the backends -------------------------------------------------------------------------

@register_attention("explicit", returns_weights=True)
def explicit_attention(q, k, v, *, mask, bias, dropout_p, need_weights, options):
    """The reference: the formula written out; returns the weights (for plots, ``attn_out``)."""
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, H, Tq, Tk)
    if bias is not None:
        scores = scores + bias.to(scores.dtype)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    exact = torch.promote_types(scores.dtype, torch.float32)  # softmax at least in fp32
    weights = torch.softmax(scores.to(exact), -1).to(q.dtype)  # (B, H, Tq, Tk)
    if dropout_p > 0:
        weights = F.dropout(weights, dropout_p)
    return weights @ v, weights  # (B, H, Tq, D)


@register_attention("fused", native_gqa=True, native_causal=True)
def fused_attention(q, k, v, *, mask, bias, dropout_p, need_weights, options):
    """``torch.nn.functional.scaled_dot_product_attention``: flash / memory-efficient kernels
    where the device has them. Exactly this kernel, whatever the device and dtype."""
    gqa = k.shape[1] != q.shape[1]
    if options.is_causal:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True,
                                              enable_gqa=gqa), None
    return F.scaled_dot_product_attention(q, k, v, attn_mask=merge_mask(mask, bias, q.dtype),
                                          dropout_p=dropout_p, enable_gqa=gqa), None


def auto_choice(device_type: str, dtype: torch.dtype, grad_enabled: bool, q_len: int,
                batch_heads: int) -> str:
    """The backend ``auto`` uses for a call: ``fused`` unless one of these measured CPU rules
    says ``explicit`` is faster:
      * bf16/fp16 training on CPU: torch's CPU flash kernel (forward + backward) is slower than
        the plain formula (bench/train_throughput.py); for inference the fused kernel is faster
        (bench/encoder_throughput.py), so only training switches;
      * one query per row with batch x heads >= 32 on CPU (batched decoding, beam search): the
        plain formula is 1.5-2x faster than the CPU flash kernel; for one row they are even."""
    if device_type == "cpu" and dtype in (torch.bfloat16, torch.float16) and grad_enabled:
        return "explicit"
    if device_type == "cpu" and q_len == 1 and batch_heads >= 32:
        return "explicit"
    return "fused"


@register_attention("auto", native_gqa=True, native_causal=True)
def auto_attention(q, k, v, *, mask, bias, dropout_p, need_weights, options):
    """``fused`` or ``explicit``, whichever :func:`auto_choice` measured faster for this call."""
    name = auto_choice(q.device.type, q.dtype, torch.is_grad_enabled(), q.shape[-2],
                       q.shape[0] * q.shape[1])
    return call_backend(ATTENTION_BACKENDS[name], q, k, v, mask=mask, bias=bias,
                        dropout_p=dropout_p, need_weights=need_weights, options=options)


@register_attention("sliding_window", native_gqa=True, own_mask=True)
def sliding_window_attention(q, k, v, *, mask, bias, dropout_p, need_weights, options):
    """Mistral's sliding window: each query sees the last ``options.window`` positions (itself
    included); in an encoder (not causal) the keys less than ``window`` positions away on either
    side. Registered ``own_mask``: ``mask`` is the padding only, the window is added here;
    on the dense path this backend also drops the keys no query can see (decoding past the window attends over ``window`` keys, not the whole cache) and
    runs torch's fused kernel on the rest. A long sequence without bias or KV cache
    (T >= 4 windows) is computed blocked instead, in O(T x window): :mod:`.attention_blocked`."""
    if options.window <= 0:
        raise ConfigError("attention = 'sliding_window' needs a window: set "
                          "model.attention_window > 0")
    Tq, Tk = q.shape[-2], k.shape[-2]
    usable, padding = key_padding(mask)
    if (usable and bias is None and Tq == Tk and options.query_offset(Tq, Tk) == 0
            and blocked_pays(Tk, options.window)):
        k, v = repeat_kv(k, q.shape[1]), repeat_kv(v, q.shape[1])  # (B, H, T, D)
        after = 0 if options.causal else options.window - 1
        return banded_attention(q, k, v, before=options.window - 1, after=after,
                                padding=padding, dropout_p=dropout_p), None
    mask = prepare_mask(Tq, Tk, mask, options.causal, options, q.device)  # the reference
    start = max(0, options.query_offset(Tq, Tk) - options.window + 1) if options.causal else 0
    if start > 0:
        k, v = k[:, :, start:], v[:, :, start:]  # (B, Hkv, Tk - start, D)
        mask = mask[..., start:] if mask is not None else None
        bias = bias[..., start:] if bias is not None else None
    return fused_attention(q, k, v, mask=mask, bias=bias, dropout_p=dropout_p,
                           need_weights=False, options=options)
