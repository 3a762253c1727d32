"""A fast decoding step for decoder-only models: one new token per row through the model with
the Python overhead of the general forward pass removed, optionally through ``torch.compile``.

At batch 1 a small model's step is dominated by overhead, not by the matmuls: SmolLM2-135M
int4 runs ~210 quantised matmuls a token, and the general forward (masks, backend lookup,
options, keyword plumbing, ~10 small tensor ops per module) costs as much again as the
kernels. :class:`FastDecoder` walks the same modules with a straight-line step:

- the q/k/v projections and the gate/up projections of each layer run as **one** matmul each
  (their weights concatenated once; int8 / int4 / float layers alike; checked bit-exact
  against the separate layers when built, else left separate);
- attention for the one query reads the KV cache directly (no mask building, no backend
  dispatch); the new keys/values are written in place;
- with ``compile`` the step goes through ``torch.compile`` (as gpt-fast does): the attention
  then reads the whole preallocated cache with a ``position <= pos`` mask, and the cache length
  is marked dynamic, so one compilation serves every step and every cache size. ``full``
  (``compile=True``) compiles the whole step as one graph (the fastest; a minute or more to
  compile on a small CPU); ``layers`` compiles one block step and reuses it for every layer
  (seconds to compile; the eager loop around it costs some of the gain).

Prefill (the prompt) still runs through the model's own forward. Only what the step
reproduces exactly is accepted (:func:`unsupported`); anything else (ALiBi, sliding windows,
cross-attention, Transformer-XL memory, another cache type, ...) runs the model as before.
Attach with :func:`enable_fast_decode`; :func:`~lmforge.inference.generate.generate_tokens`
then uses it for every one-token step.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn

from ..blocks.kv_cache import KVCache
from ..blocks.positions import rotate_half
from .quant.fuse import fuse_linears

ATTR = "fast_decode"
"""The model attribute :func:`enable_fast_decode` sets (read by generate)."""
PLAIN_BACKENDS = ("auto", "fused", "explicit")
COMPILE_MODES = (False, True, "layers", "full")


def unsupported(model: nn.Module) -> str | None:
    """Why :class:`FastDecoder` cannot run ``model`` (one short phrase), or None if it can."""
    backbone = getattr(model, "backbone", None)
    cfg = getattr(model, "cfg", None)
    if backbone is None or cfg is None or not hasattr(model, "lm_head"):
        return "not a decoder-only language model"
    checks = [
        (cfg.arch == "decoder" and backbone.causal, "not a causal decoder"),
        (cfg.prenorm, "post-norm blocks"),
        (cfg.positional in ("rope", "learned", "sinusoidal", "none"),
         f"positional = {cfg.positional!r}"),
        (not cfg.reversible and not getattr(cfg, "memory_length", 0), "reversible/XL layers"),
        (cfg.attention in PLAIN_BACKENDS, f"attention = {cfg.attention!r}"),
        (not cfg.attention_window, "a sliding window"),
    ]
    for ok, why in checks:
        if not ok:
            return why
    for blk in backbone.layers:
        if blk.cross_attn is not None or blk.attn.r_proj is not None:
            return "cross-attention or relative positions"
    return None


class FastDecoder:
    """The one-token step of ``model`` (see the module docstring). Call it as
    ``logits = dec(ids, cache)``: ids (B, 1), cache the model's :class:`KVCache` (prefilled;
    its ``length`` is advanced by one), logits (B, V). :meth:`accepts` says whether a cache can
    go this way. The fused projections are copies made here: build it once the weights are
    final (after loading, merging adapters, quantising), and again if they change."""

    def __init__(self, model: nn.Module, compile: bool | str = False, fuse: bool = True):
        why = unsupported(model)
        if why is not None:
            raise ValueError(f"fast decoding does not support this model: {why}")
        if compile not in COMPILE_MODES:
            raise ValueError(f"compile={compile!r}: choose one of {COMPILE_MODES}")
        self.model, self.backbone = model, model.backbone
        self.device = model.lm_head.weight.device
        """Where the fused copies were made (a model moved since runs its own forward)."""
        self.dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
        """The compute dtype: a cache stored in another (``--kv-cache bf16``) takes the model's
        path, which casts what it reads."""
        self.fused = [self._fuse_layer(blk) if fuse else None for blk in self.backbone.layers]
        self.compiled = "full" if compile is True else compile
        """False, ``full`` (``True``: the whole step one graph, the fastest; about a minute to
        compile SmolLM2-135M on 2 cores) or ``layers`` (one compiled block step reused by
        every layer: seconds to compile, slower steps)."""
        self._layer = torch.compile(_layer_step) if self.compiled == "layers" else _layer_step
        self._fn = torch.compile(self._step) if self.compiled == "full" else self._step

    @staticmethod
    def _fuse_layer(blk) -> tuple[nn.Module | None, nn.Module | None]:
        """(q|k|v, gate|up) as one layer each, or None where they cannot be fused."""
        a, ff = blk.attn, blk.ff
        qkv = fuse_linears([a.q_proj, a.k_proj, a.v_proj])
        gate_up = fuse_linears([ff.gate_proj, ff.up_proj]) if ff.gated else None
        return qkv, gate_up

    def accepts(self, ids: torch.Tensor, cache) -> bool:
        """True when this step can feed ``ids`` with ``cache`` (else use the model)."""
        rope = self.backbone.layers[0].attn.rope
        return (type(cache) is KVCache and ids.dim() == 2 and ids.shape[1] == 1
                and not getattr(cache, "quantized", False)  # int8 codes: the model's path
                and cache.k[0].dtype == self.dtype
                and not cache._static and cache.length < cache.max_len
                and not self.model.training and cache.k[0].device == self.device
                and (rope is None or cache.max_len <= rope.cos.shape[0]))

    @torch.no_grad()
    def __call__(self, ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        pos = torch.tensor([cache.length], device=ids.device)  # (1,)
        if self.compiled:
            for t in cache.k + cache.v:  # one compilation for every cache size
                torch._dynamo.maybe_mark_dynamic(t, 2)
            logits = self._fn(ids, pos, cache.k, cache.v, None)
        else:
            logits = self._fn(ids, pos, cache.k, cache.v, cache.length + 1)
        cache.advance(1)
        return logits

    def _step(self, ids, pos, ks: list, vs: list, n_keys: int | None) -> torch.Tensor:
        """ids (B, 1), pos (1,): the position being written; keys 0..n_keys-1 are read (None,
        compiled: all of the cache, the positions after ``pos`` masked)."""
        bb = self.backbone
        x = bb._embed(ids, pos, None)  # (B, 1, C)
        for i, blk in enumerate(bb.layers):
            x = self._layer(blk, self.fused[i], x, pos, ks[i], vs[i], n_keys)
        x = bb.norm(x) if bb.norm is not None else x
        return self.model.lm_head(x)[:, -1]  # (B, V)

    @staticmethod
    def _attend(a, h, fused, pos, kc, vc, n_keys: int | None) -> torch.Tensor:
        """Self-attention of one query per row over the cache (written at ``pos``)."""
        B, D = h.shape[0], a.head_dim
        if fused is not None and fused[0] is not None:
            q, k, v = fused[0](h).split([a.n_head * D, a.n_kv_head * D, a.n_kv_head * D], -1)
        else:
            q, k, v = a.q_proj(h), a.k_proj(h), a.v_proj(h)
        q = q.view(B, 1, a.n_head, D).transpose(1, 2)  # (B, H, 1, D)
        k = k.view(B, 1, a.n_kv_head, D).transpose(1, 2)  # (B, Hkv, 1, D)
        v = v.view(B, 1, a.n_kv_head, D).transpose(1, 2)
        if a.q_norm is not None:
            q, k = a.q_norm(q), a.k_norm(k)
        if a.rope is not None:
            cos, sin = a.rope.cos[pos].to(q.dtype), a.rope.sin[pos].to(q.dtype)  # (1, D)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
        kc.index_copy_(2, pos, k.to(kc.dtype))
        vc.index_copy_(2, pos, v.to(vc.dtype))
        valid = None  # eager: keys 0..pos are exactly the valid ones
        if n_keys is None:  # compiled: the whole cache, later positions masked
            n_keys = kc.shape[2]
            valid = (torch.arange(n_keys, device=kc.device) <= pos)[None, None, None, :]
        kk, vv = kc[:, :, :n_keys], vc[:, :, :n_keys]  # (B, Hkv, n_keys, D)
        if kk.dtype != q.dtype:  # a cache stored in another precision: attend in q's
            kk, vv = kk.to(q.dtype), vv.to(q.dtype)
        y = F.scaled_dot_product_attention(q, kk, vv, attn_mask=valid,
                                           enable_gqa=a.n_head != a.n_kv_head)  # (B, H, 1, D)
        return a.o_proj(y.transpose(1, 2).reshape(B, 1, a.n_head * D))

    @staticmethod
    def _ff(ff, h, fused) -> torch.Tensor:
        if not ff.gated:
            return ff.down_proj(ff.act(ff.up_proj(h)))
        if fused is not None and fused[1] is not None:
            g, u = fused[1](h).chunk(2, dim=-1)
        else:
            g, u = ff.gate_proj(h), ff.up_proj(h)
        return ff.down_proj(ff.act(g) * u)


def _layer_step(blk, fused, x, pos, kc, vc, n_keys: int | None) -> torch.Tensor:
    """One pre-norm block for one new token: x (B, 1, C) -> (B, 1, C)."""
    x = x + FastDecoder._attend(blk.attn, blk.norm1(x), fused, pos, kc, vc, n_keys)
    return x + FastDecoder._ff(blk.ff, blk.norm2(x), fused)


def compile_unavailable() -> str | None:
    """Why ``torch.compile`` cannot be used here (one line), or None. Checked by compiling
    a tiny function once (the inductor CPU backend needs a C++ compiler)."""
    try:
        fn = torch.compile(lambda t: t * 2 + 1, dynamic=False)
        fn(torch.ones(3))
    except Exception as e:  # noqa: BLE001 — any failure means: no compiler here
        first = (str(e).strip().splitlines() or [""])[0][:160]
        return f"{type(e).__name__}: {first}"
    return None


def enable_fast_decode(model: nn.Module, compile: bool | str = False, fuse: bool = True,
                       warn=None) -> FastDecoder | None:
    """Attach a :class:`FastDecoder` to ``model`` (generate then uses it for one-token steps);
    returns it, or None (with one line on stderr, or to ``warn``) when the model is not
    supported. ``compile=True`` falls back to the uncompiled fast step, with one line, where
    ``torch.compile`` does not work."""
    say = warn or (lambda msg: print(msg, file=sys.stderr))
    why = unsupported(model)
    if why is not None:
        say(f"lmforge: fast decoding is not available for this model ({why}); decoding as usual")
        return None
    if compile:
        why = compile_unavailable()
        if why is not None:
            say(f"lmforge: --compile: torch.compile is unavailable here ({why}); using the "
                "uncompiled fast step")
            compile = False
    dec = FastDecoder(model, compile=compile, fuse=fuse)
    setattr(model, ATTR, dec)
    return dec


def disable_fast_decode(model: nn.Module) -> None:
    """Remove what :func:`enable_fast_decode` attached."""
    if hasattr(model, ATTR):
        delattr(model, ATTR)
