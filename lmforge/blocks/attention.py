"""Scaled dot-product attention and multi-head attention (MHA / GQA / MQA, self and cross).

Two backends compute softmax(Q Kᵀ / sqrt(d) + bias) V:
  * ``fused``    – ``torch.nn.functional.scaled_dot_product_attention`` (flash/memory-efficient
                   kernels where the device has them); cannot return the weights.
  * ``explicit`` – the formula written out; returns the attention weights (for plots).
Masks are boolean with True = "may attend", broadcastable to (B, H, Tq, Tk).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .kv_cache import KVCache
from .positions import RotaryEmbedding
from .unpad import Unpadded

BACKENDS = ("fused", "explicit")


def _merge_mask(mask: torch.Tensor | None, bias: torch.Tensor | None, dtype: torch.dtype):
    """Fold a boolean mask into an additive float bias (0 / -inf)."""
    if bias is None:
        return mask
    bias = bias.to(dtype)
    if mask is not None:
        bias = bias.masked_fill(~mask, float("-inf"))
    return bias


def causal_mask(q_len: int, k_len: int, device=None) -> torch.Tensor:
    """Query i (the last q_len of k_len positions) may see keys 0..k_len-q_len+i.  # (Tq, Tk)"""
    offset = k_len - q_len
    return torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(diagonal=offset)


def scaled_dot_product_attention(
    q: torch.Tensor,  # (B, H, Tq, D)
    k: torch.Tensor,  # (B, Hkv, Tk, D), Hkv divides H
    v: torch.Tensor,  # (B, Hkv, Tk, D)
    mask: torch.Tensor | None = None,  # bool, True = attend, broadcast to (B, H, Tq, Tk)
    bias: torch.Tensor | None = None,  # float, added to scores, broadcast to (B, H, Tq, Tk)
    is_causal: bool = False,
    dropout_p: float = 0.0,
    backend: str = "fused",
    need_weights: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Returns (output (B, H, Tq, D), weights (B, H, Tq, Tk) or None)."""
    Tq, Tk = q.shape[-2], k.shape[-2]
    if backend == "fused" and q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16) \
            and torch.is_grad_enabled():
        # measured: in bf16 training on CPU, torch's flash kernel (forward + backward) is
        # slower than the plain formula (bench/train_throughput.py); for inference the fused
        # kernel is faster (bench/encoder_throughput.py), so only training switches
        backend = "explicit"
    if backend == "fused" and Tq == 1 and q.device.type == "cpu" and q.shape[0] * q.shape[1] >= 32:
        # measured: with one query per row (batched decoding, beam search) the plain formula is
        # 1.5-2x faster than torch's CPU flash kernel; for a single row they are even
        backend = "explicit"
    if is_causal and Tq > 1:
        if mask is None and bias is None and backend == "fused" and not need_weights and Tq == Tk:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True,
                                                  enable_gqa=k.shape[1] != q.shape[1]), None
        cm = causal_mask(Tq, Tk, q.device)
        mask = cm if mask is None else mask & cm
    if mask is not None:
        # a query that may attend to nothing (a padding position) attends to everything
        # instead: its output is ignored, and this keeps softmax free of NaN
        mask = mask | ~mask.any(-1, keepdim=True)
    gqa = k.shape[1] != q.shape[1]  # grouped-query: each K/V head serves H / Hkv queries
    if backend == "fused" and not need_weights:
        attn_mask = _merge_mask(mask, bias, q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p,
                                              enable_gqa=gqa), None
    if gqa:
        rep = q.shape[1] // k.shape[1]
        k = k.repeat_interleave(rep, dim=1)  # (B, H, S, D)
        v = v.repeat_interleave(rep, dim=1)
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, H, Tq, Tk)
    if bias is not None:
        scores = scores + bias.to(scores.dtype)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores.to(torch.promote_types(scores.dtype, torch.float32)), -1).to(q.dtype)
    if dropout_p > 0:
        weights = F.dropout(weights, dropout_p)
    return weights @ v, weights


class MultiHeadAttention(nn.Module):
    """Projects the input to queries, keys and values, splits them into heads, attends, and
    projects back. ``n_kv_head < n_head`` gives grouped-query attention (1 = multi-query).

    The four projections are ordinary submodules named ``q_proj``/``k_proj``/``v_proj``/
    ``o_proj``, so adapters (LoRA) and quantised linears replace them in place by name.
    """

    def __init__(self, d_model: int, n_head: int, n_kv_head: int | None = None, bias: bool = True,
                 rope: RotaryEmbedding | None = None, backend: str = "fused", dropout: float = 0.0,
                 head_dim: int | None = None):
        super().__init__()
        n_kv_head = n_kv_head or n_head
        if n_head % n_kv_head:
            raise ValueError(f"n_head ({n_head}) must be a multiple of n_kv_head ({n_kv_head})")
        self.n_head, self.n_kv_head = n_head, n_kv_head
        self.head_dim = head_dim or d_model // n_head
        self.q_proj = nn.Linear(d_model, n_head * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(d_model, n_kv_head * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, n_kv_head * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(n_head * self.head_dim, d_model, bias=bias)
        self.rope = rope
        self.backend = backend
        self.dropout = dropout

    def _fusable(self) -> bool:
        """Plain linear projections can run as one matrix product (adapters cannot). Worth it
        for many rows (training, long prompts); for a few rows (decoding) the three weight
        copies cost more than the one large GEMM saves."""
        return all(type(p) is nn.Linear for p in (self.q_proj, self.k_proj, self.v_proj))

    def _fused_qkv(self, x: torch.Tensor, unpad: Unpadded | None = None):
        ps = (self.q_proj, self.k_proj, self.v_proj)
        w = torch.cat([p.weight for p in ps])  # (Hq*D + 2*Hkv*D, C)
        b = torch.cat([p.bias for p in ps]) if ps[0].bias is not None else None
        qkv = F.linear(x, w, b)  # (B, T, Hq*D + 2*Hkv*D) or packed (N, ...)
        if unpad is not None:
            qkv = unpad.pad(qkv)  # (B, T, ...): attention needs the batch layout
        return qkv.split([p.out_features for p in ps], dim=-1)

    def _heads(self, x: torch.Tensor, n: int) -> torch.Tensor:  # (B, T, n*D) -> (B, n, T, D)
        B, T, _ = x.shape
        return x.view(B, T, n, self.head_dim).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,  # (B, T, C)
        *,
        context: torch.Tensor | None = None,  # (B, S, C): cross-attention keys/values source
        positions: torch.Tensor | None = None,  # (T,) or (B, T), for RoPE
        mask: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        is_causal: bool = False,
        cache: KVCache | None = None,
        layer: int = 0,
        attn_out: list | None = None,
        unpad: Unpadded | None = None,  # x is (N, C), the real tokens of a padded batch
    ) -> torch.Tensor:
        if unpad is not None and (context is not None or cache is not None):
            raise ValueError("packed (unpadded) input is for self-attention without a KV cache")
        B, T = (unpad.batch, unpad.length) if unpad is not None else x.shape[:2]
        rows = x.shape[0] if unpad is not None else B * T
        static = context is not None and cache is not None and cache.has_static(layer)
        if context is None and T > 1 and rows >= 128 and self._fusable():
            q, k, v = self._fused_qkv(x, unpad)  # one large matrix product instead of three
        else:
            q = self.q_proj(x)
            if not static:
                src = x if context is None else context  # (B, S, C)
                k, v = self.k_proj(src), self.v_proj(src)
            if unpad is not None:  # (N, n*D) -> (B, T, n*D): attention needs the batch layout
                q, k, v = unpad.pad(q), unpad.pad(k), unpad.pad(v)
        q = self._heads(q, self.n_head)  # (B, H, T, D)
        if static:
            k, v = cache.static(layer)  # cross-attention K/V: computed once per source
        else:
            k = self._heads(k, self.n_kv_head)  # (B, Hkv, S, D)
            v = self._heads(v, self.n_kv_head)
        if context is None:
            if self.rope is not None:
                q = self.rope(q, positions)
                k = self.rope(k, positions)
            if cache is not None:
                k, v = cache.update(layer, k, v)  # (B, Hkv, past+T, D)
        elif cache is not None and not static:
            k, v = k.contiguous(), v.contiguous()  # read at every step: lay them out once
            cache.set_static(layer, k, v)
        need = attn_out is not None
        y, w = scaled_dot_product_attention(
            q, k, v, mask=mask, bias=bias, is_causal=is_causal,
            dropout_p=self.dropout if self.training else 0.0,
            backend="explicit" if need else self.backend, need_weights=need,
        )
        if need:
            attn_out.append(w.detach())
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)  # (B, T, H*D)
        if unpad is not None:
            y = unpad.pack(y)  # (N, H*D)
        return self.o_proj(y)
