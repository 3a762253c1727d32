"""Key/value cache for incremental decoding.

Buffers are allocated once for ``max_len`` positions, so each decoding step writes its new keys
and values in place instead of concatenating. All layers share one ``length``: the model calls
:meth:`advance` once after a forward pass. Cross-attention keys/values (encoder–decoder models)
are "static": computed once per source and kept as they are.
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(self, n_layer: int, batch: int, n_kv_head: int, max_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        shape = (batch, n_kv_head, max_len, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.max_len = max_len
        self.length = 0
        self._static: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store k, v (B, Hkv, T, D) at positions length..length+T; return all keys/values so
        far, (B, Hkv, length+T, D)."""
        start, end = self.length, self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; asked to write up to {end}")
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

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
        self.k = [t.index_select(0, index) for t in self.k]
        self.v = [t.index_select(0, index) for t in self.v]
        if static:
            self._static = {i: (k.index_select(0, index), v.index_select(0, index))
                            for i, (k, v) in self._static.items()}
