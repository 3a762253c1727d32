"""Multi-head attention (MHA / GQA / MQA, self and cross): projections, heads, RoPE, the KV
cache; the attention itself is a backend looked up by name (``attention_backends``: ``auto``,
``fused``, ``explicit``, ``sliding_window``, and any registered later).
Masks are boolean with True = "may attend", broadcastable to (B, H, Tq, Tk).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dataclasses import replace

from .attention_backends import AttentionOptions, attention_forward, causal_mask, get_backend
from .kv_cache import KVCache
from .norms import RMSNorm
from .positions import RotaryEmbedding
from .relative import RelativeContext, relative_bias
from .unpad import Unpadded

__all__ = ["MultiHeadAttention", "causal_mask", "scaled_dot_product_attention"]

_PLAIN = AttentionOptions()  # cross-attention: no window, no offset


def scaled_dot_product_attention(
    q: torch.Tensor,  # (B, H, Tq, D)
    k: torch.Tensor,  # (B, Hkv, Tk, D), Hkv divides H
    v: torch.Tensor,  # (B, Hkv, Tk, D)
    mask: torch.Tensor | None = None,  # bool, True = attend, broadcast to (B, H, Tq, Tk)
    bias: torch.Tensor | None = None,  # float, added to scores, broadcast to (B, H, Tq, Tk)
    is_causal: bool = False,
    dropout_p: float = 0.0,
    backend: str = "auto",
    need_weights: bool = False,
    options: AttentionOptions = AttentionOptions(),
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Returns (output (B, H, Tq, D), weights (B, H, Tq, Tk) or None), computed by the
    registered backend ``backend`` (see :func:`~.attention_backends.attention_forward`)."""
    return attention_forward(backend, q, k, v, mask=mask, bias=bias, is_causal=is_causal,
                             dropout_p=dropout_p, need_weights=need_weights, options=options)


class MultiHeadAttention(nn.Module):
    """Projects the input to queries, keys and values, splits them into heads, attends, and
    projects back. ``n_kv_head < n_head`` gives grouped-query attention (1 = multi-query).

    The four projections are ordinary submodules named ``q_proj``/``k_proj``/``v_proj``/
    ``o_proj``, so adapters (LoRA) and quantised linears replace them in place by name.
    """

    def __init__(self, d_model: int, n_head: int, n_kv_head: int | None = None, bias: bool = True,
                 rope: RotaryEmbedding | None = None, backend: str = "auto", dropout: float = 0.0,
                 head_dim: int | None = None, options: AttentionOptions | None = None,
                 context_length: int = 0, relative: bool = False, qk_norm_eps: float | None = None):
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
        self.r_proj = nn.Linear(d_model, n_head * self.head_dim, bias=False) if relative else None
        """Transformer-XL's W_r: projects the sinusoidal distance vectors (``relative.py``)."""
        qk_norm = qk_norm_eps is not None
        self.q_norm = RMSNorm(self.head_dim, qk_norm_eps) if qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, qk_norm_eps) if qk_norm else None
        """With ``qk_norm_eps``: RMSNorm over each head's queries / keys, before RoPE (Qwen3)."""
        self.rope = rope
        entry = get_backend(backend)  # an unknown name fails here, with the registered ones
        self.backend = backend
        """Name of the attention backend (``ATTENTION_BACKENDS``), looked up at each call."""
        options = options or AttentionOptions()
        self.backend_state = None if entry.make_state is None else entry.make_state(
            options.settings, n_head, self.head_dim, context_length)
        """The backend's own parameters/buffers (e.g. Linformer's projections), or None."""
        self.options = replace(options, state=self.backend_state)
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

    def _project(self, x, context, memory, static: bool, unpad: Unpadded | None):
        """Queries from ``x``, keys/values from ``x`` (self), ``context`` (cross) or
        [memory; x] (Transformer-XL); k, v are None when the cache holds them (static)."""
        if memory is not None:  # keys/values over [memory; x]
            src = torch.cat([memory, x], dim=1)  # (B, M+T, C)
            return self.q_proj(x), self.k_proj(src), self.v_proj(src)
        rows = x.shape[0] if unpad is not None else x.shape[0] * x.shape[1]
        if context is None and rows >= 128 and self._fusable() and \
                (unpad.length if unpad is not None else x.shape[1]) > 1:
            return self._fused_qkv(x, unpad)  # one large matrix product instead of three
        q, k, v = self.q_proj(x), None, None
        if not static:
            src = x if context is None else context  # (B, S, C)
            k, v = self.k_proj(src), self.v_proj(src)
        if unpad is not None:  # (N, n*D) -> (B, T, n*D): attention needs the batch layout
            q, k, v = unpad.pad(q), unpad.pad(k), unpad.pad(v)
        return q, k, v

    def _heads(self, x: torch.Tensor, n: int,
               norm: nn.Module | None = None) -> torch.Tensor:  # (B, T, n*D) -> (B, n, T, D)
        """Split into heads; ``norm`` (qk-norm) normalises each head's vector."""
        B, T, _ = x.shape
        x = x.view(B, T, n, self.head_dim).transpose(1, 2)
        return x if norm is None else norm(x)

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
        memory: torch.Tensor | None = None,  # (B, M, C) earlier positions (XL), keys/values only
        relative: RelativeContext | None = None,  # Transformer-XL relative positions
    ) -> torch.Tensor:
        if unpad is not None and (context is not None or cache is not None):
            raise ValueError("packed (unpadded) input is for self-attention without a KV cache")
        if memory is not None and (context is not None or cache is not None or unpad is not None):
            raise ValueError("XL memory is for self-attention without a KV cache or packing")
        B, T = (unpad.batch, unpad.length) if unpad is not None else x.shape[:2]
        static = context is not None and cache is not None and cache.has_static(layer)
        q, k, v = self._project(x, context, memory, static, unpad)
        q = self._heads(q, self.n_head, self.q_norm)  # (B, H, T, D)
        if static:
            k, v = cache.static(layer)  # cross-attention K/V: computed once per source
        else:
            k = self._heads(k, self.n_kv_head, self.k_norm)  # (B, Hkv, S, D)
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
        if relative is not None and context is None:  # XL: q + u, and the position bias
            q, pos = relative_bias(q, self.r_proj, relative, k.shape[-2])  # pos (B, H, T, S)
            bias = pos if bias is None else bias + pos
        need = attn_out is not None
        y, w = attention_forward(  # (B, H, T, D), (B, H, T, S) or None
            self.backend, q, k, v, mask=mask, bias=bias, is_causal=is_causal,
            dropout_p=self.dropout if self.training else 0.0, need_weights=need,
            options=self.options if context is None else _PLAIN,
        )
        if need:
            attn_out.append(w.detach())
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)  # (B, T, H*D)
        if unpad is not None:
            y = unpad.pack(y)  # (N, H*D)
        return self.o_proj(y)
