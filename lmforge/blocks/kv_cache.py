"""Key/value cache for incremental decoding.

Buffers are allocated once for ``max_len`` positions, so each decoding step writes its new keys
and values in place instead of concatenating. All layers share one ``length``: the model calls
:meth:`advance` once after a forward pass. Cross-attention keys/values (encoder–decoder models)
are "static": computed once per source and kept as they are (always in full precision).

The self-attention buffers may be stored in another precision than the model computes in
(``kv_dtype``, docs/quantization.md "KV cache precision"):

- ``fp32`` / ``bf16`` (/ ``fp16``): buffers of that dtype; what :meth:`KVCache.update` returns
  is cast to the compute dtype for attention.
- ``int8``: per-(token, head) symmetric absmax codes (``q = round(x / s)``, ``s = max|x| / 127``
  over the head dimension), int8 buffers plus a float32 scale buffer (B, Hkv, max_len, 1);
  the filled prefix is dequantised on every read (as llama.cpp's q8_0 cache, one scale per
  head vector instead of per 32 values).
"""

from __future__ import annotations

import torch

from ..errors import ConfigError

KV_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
             "int8": torch.int8}
"""KV-cache precisions by name (``--kv-cache``)."""
_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
_SCALE_DTYPE = torch.float32


def kv_dtype_name(kv_dtype: str | torch.dtype | None) -> str | None:
    """The canonical name (``fp32``, ``bf16``, ``fp16``, ``int8``) of a KV-cache precision given
    by name or torch dtype; None stays None (the compute dtype). A ConfigError otherwise."""
    if kv_dtype is None:
        return None
    if isinstance(kv_dtype, torch.dtype):
        for name, dt in KV_DTYPES.items():
            if dt == kv_dtype:
                return name
        raise ConfigError(f"kv cache dtype {kv_dtype} is not supported; use one of "
                          f"{', '.join(KV_DTYPES)}")
    name = _ALIASES.get(str(kv_dtype).lower(), str(kv_dtype).lower())
    if name not in KV_DTYPES:
        raise ConfigError(f"kv cache dtype {kv_dtype!r} is not supported; use one of "
                          f"{', '.join(KV_DTYPES)}")
    return name


def set_kv_cache_dtype(model, kv_dtype: str | torch.dtype | None) -> None:
    """Make ``kv_dtype`` the precision of every KV cache ``model.new_cache`` makes from now on
    (generation, chat, the server; None = the model's compute dtype, the default)."""
    model.kv_cache_dtype = kv_dtype_name(kv_dtype)


def quantize_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric absmax int8 codes of ``x`` (..., D) per vector along the last dimension:
    codes (..., D) int8 in [-127, 127] and scales (..., 1) float32 with x ≈ codes * scale
    (|error| <= scale / 2)."""
    xf = x.float()
    scale = xf.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / 127.0  # (..., 1)
    codes = torch.round(xf / scale).clamp_(-127, 127).to(torch.int8)
    return codes, scale.to(_SCALE_DTYPE)


def dequantize_int8(codes: torch.Tensor, scale: torch.Tensor,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``codes * scale`` in ``dtype`` (the inverse of :func:`quantize_int8`)."""
    return (codes.to(_SCALE_DTYPE) * scale).to(dtype)


class KVCache:
    def __init__(self, n_layer: int, batch: int, n_kv_head: int, max_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                 kv_dtype: str | torch.dtype | None = None):
        """``dtype``: the compute dtype (of the keys/values given and returned); ``kv_dtype``:
        how they are stored (None: as ``dtype``; ``fp32``, ``bf16``, ``fp16`` or ``int8``)."""
        self.kv_dtype = kv_dtype_name(kv_dtype)
        self.dtype = dtype
        self.quantized = self.kv_dtype == "int8"
        store = dtype if self.kv_dtype is None else KV_DTYPES[self.kv_dtype]
        shape = (batch, n_kv_head, max_len, head_dim)
        self.k = [torch.zeros(shape, dtype=store, device=device) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, dtype=store, device=device) for _ in range(n_layer)]
        self.k_scale: list[torch.Tensor] = []
        self.v_scale: list[torch.Tensor] = []
        if self.quantized:
            scale_shape = (batch, n_kv_head, max_len, 1)
            self.k_scale = [torch.zeros(scale_shape, dtype=_SCALE_DTYPE, device=device)
                            for _ in range(n_layer)]
            self.v_scale = [torch.zeros(scale_shape, dtype=_SCALE_DTYPE, device=device)
                            for _ in range(n_layer)]
        self.max_len = max_len
        self.length = 0
        self._static: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def buffers(self) -> list[torch.Tensor]:
        """Every per-layer buffer (B, Hkv, max_len, D or 1): keys, values and, for int8, their
        scales; two caches of one kind list them in the same order (to copy positions over)."""
        return self.k + self.v + self.k_scale + self.v_scale

    def bytes_per_token(self) -> int:
        """Bytes the self-attention buffers take per position of one row."""
        return sum(b.shape[1] * b.shape[3] * b.element_size() for b in self.buffers())

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store k, v (B, Hkv, T, D) at positions length..length+T; return all keys/values so
        far, (B, Hkv, length+T, D), in the dtype of ``k``."""
        start, end = self.length, self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; asked to write up to {end}")
        if self.quantized:
            for codes, scales, x in ((self.k, self.k_scale, k), (self.v, self.v_scale, v)):
                q, s = quantize_int8(x)
                codes[layer][:, :, start:end] = q
                scales[layer][:, :, start:end] = s
            return (dequantize_int8(self.k[layer][:, :, :end], self.k_scale[layer][:, :, :end],
                                    k.dtype),
                    dequantize_int8(self.v[layer][:, :, :end], self.v_scale[layer][:, :, :end],
                                    v.dtype))
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        ks, vs = self.k[layer][:, :, :end], self.v[layer][:, :, :end]
        if ks.dtype != k.dtype:  # stored in another precision: attention runs in k's
            ks, vs = ks.to(k.dtype), vs.to(v.dtype)
        return ks, vs

    def advance(self, n: int) -> None:
        self.length += n

    def has_static(self, layer: int) -> bool:
        return layer in self._static

    def static(self, layer: int):
        return self._static[layer]

    def set_static(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        self._static[layer] = (k, v)

    def reorder(self, index: torch.Tensor, static: bool = True) -> None:
        """Keep batch rows ``index`` (beam search, finished rows leaving): the buffers are
        gathered along dim 0 (whole: measured faster than gathering the filled part in place).
        ``static=False`` leaves the cross-attention keys/values alone, for a reorder that only
        moves rows among copies of the same source (beams of one sentence)."""
        pick = lambda ts: [t.index_select(0, index) for t in ts]
        self.k, self.v = pick(self.k), pick(self.v)
        self.k_scale, self.v_scale = pick(self.k_scale), pick(self.v_scale)
        if static:
            self._static = {i: (k.index_select(0, index), v.index_select(0, index))
                            for i, (k, v) in self._static.items()}
