"""Weight-only quantised linear layers for CPU decoding: int8 (one scale per output channel)
and int4 (a scale and a zero per group of ``group_size`` input channels).

Decoding one token reads every weight once, so its speed is bounded by memory bandwidth: int8
reads a quarter of float32's bytes, int4 an eighth. The matmuls run on PyTorch's own CPU
kernels (as gpt-fast does), which dequantise inside the kernel:

- int8: ``torch.ops.aten._weight_int8pack_mm(x, q, scales)``: ``y = x @ (q * s[:, None]).T``
- int4: ``torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, G, scales_and_zeros)``:
  ``w = (q - 8) * scale + zero`` per group, ``q`` in 0..15, packed once at load by
  ``_convert_weight_to_int4pack_for_cpu`` (a CPU-specific layout, never stored).

Where a kernel does not apply (another device, an int4 layer whose output size is not a
multiple of 16) the layer dequantises its weight and calls ``F.linear`` (the same numbers,
slower). The portable forms (what a quantised model directory stores) are the ``q`` tensors
below; :func:`quantize_int8` / :func:`quantize_int4` make them from a float weight.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ...errors import ConfigError

GROUP_SIZES = (32, 64, 128, 256)
"""Int4 group sizes (input channels sharing one scale and zero)."""
KERNEL_DTYPE = torch.bfloat16
"""The CPU kernels' compute dtype: their float32 paths are naive loops (10-30x slower than a
float32 matmul on this project's CPUs), their bfloat16 ones vectorised; so a float32 (or
float16) model's activations go through the kernels in bfloat16, and the result comes back
in the model's dtype. The quantisers below choose scales (and zeros) that bfloat16 holds
exactly, so only the activations are rounded."""


def _bf16_up(x: torch.Tensor) -> torch.Tensor:
    """x >= 0 rounded up to a bfloat16 value, returned as float32 (bfloat16 rounds to nearest
    with a relative error of at most 2^-9; scaling by 1 + 2^-8 first never rounds below)."""
    return (x * (1 + 2 ** -8)).to(torch.bfloat16).float()


def _bf16(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.bfloat16).float()


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: w (N, K) float -> q (N, K) int8 in -127..127,
    scales (N,) float32, with w ~= q * scales[:, None]."""
    w = w.detach().float()
    scales = _bf16_up((w.abs().amax(dim=1) / 127).clamp(min=1e-10))  # (N,), exact in bf16
    q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scales


def check_group_size(in_features: int, group_size: int, where: str) -> None:
    """A ConfigError unless ``group_size`` is supported and divides ``in_features``."""
    if group_size not in GROUP_SIZES:
        raise ConfigError(f"--group-size {group_size}: choose one of "
                          f"{', '.join(map(str, GROUP_SIZES))}")
    if in_features % group_size:
        raise ConfigError(f"--group-size {group_size} does not divide the {in_features} input "
                          f"features of {where}; choose a group size that does")


def quantize_int4(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, ...]:
    """Asymmetric group-wise int4 (gpt-fast's): w (N, K) -> q (N, K) uint8 in 0..15, scales
    (N, K/G) and zeros (N, K/G) float32, with w ~= (q - 8) * scale + zero in each group
    (zero ~= min + 8 * scale: the group's range [min, max] in 16 steps; scale and zero are
    bfloat16 values, see :data:`KERNEL_DTYPE`)."""
    N, K = w.shape
    g = w.detach().float().reshape(N, K // group_size, group_size)  # (N, K/G, G)
    lo, hi = g.amin(dim=-1), g.amax(dim=-1)  # (N, K/G)
    scales = _bf16_up(((hi - lo) / 15).clamp(min=1e-10))  # exact in bf16
    zeros = _bf16(lo + 8 * scales)
    q = torch.round((g - zeros[..., None]) / scales[..., None] + 8).clamp(0, 15).to(torch.uint8)
    return q.reshape(N, K), scales, zeros


def dequantize_int8(q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """q (N, K) int8, scales (N,) -> w (N, K) in the scales' dtype."""
    return q.to(scales.dtype) * scales[:, None]


def dequantize_int4(q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    """q (N, K) 0..15, scales and zeros (N, K/G) -> w (N, K) in the scales' dtype."""
    N, K = q.shape
    g = q.reshape(N, scales.shape[1], -1).to(scales.dtype)  # (N, K/G, G)
    return ((g - 8) * scales[..., None] + zeros[..., None]).reshape(N, K)


def pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """q (N, K) 0..15 -> (N, K/2) uint8, element 2i in the low nibble, 2i+1 in the high one
    (the portable stored form of int4, not the CPU kernel's layout)."""
    q = q.to(torch.uint8)
    return q[:, 0::2] | (q[:, 1::2] << 4)


def unpack_nibbles(p: torch.Tensor) -> torch.Tensor:
    """(N, K/2) uint8 -> q (N, K) uint8 0..15 (inverse of :func:`pack_nibbles`)."""
    return torch.stack([p & 15, p >> 4], dim=-1).reshape(p.shape[0], -1)


class _WeightOnlyLinear(nn.Module):
    """Shared by the two layers: the bias and the dtype/device marker."""

    def __init__(self, in_features: int, out_features: int, bias: torch.Tensor | None,
                 dtype: torch.dtype):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("bias", None if bias is None else bias.detach().to(dtype))
        # Code asking a linear layer for its weight's dtype and device (the KV cache is
        # allocated like the LM head's weight) gets the activation dtype and the device; the
        # empty marker follows model.to(...) and is never saved.
        self.register_buffer("weight", torch.empty(0, dtype=dtype), persistent=False)

    def _finish(self, y: torch.Tensor, shape) -> torch.Tensor:
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*shape, self.out_features)


class Int8WeightLinear(_WeightOnlyLinear):
    """``nn.Linear`` with int8 weights (N, K) and one float scale per output channel."""

    def __init__(self, q: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None = None,
                 dtype: torch.dtype = torch.float32, use_kernel: bool = True):
        super().__init__(q.shape[1], q.shape[0], bias, dtype)
        self.use_kernel = use_kernel
        self.register_buffer("qweight", q.to(torch.int8).contiguous())  # (N, K)
        sdt = KERNEL_DTYPE if use_kernel and q.device.type == "cpu" else dtype
        self.register_buffer("scales", scales.detach().to(sdt).contiguous())  # (N,)

    @classmethod
    def from_linear(cls, layer: nn.Linear, use_kernel: bool = True) -> Int8WeightLinear:
        q, s = quantize_int8(layer.weight)
        return cls(q, s, layer.bias, layer.weight.dtype, use_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., K) -> (..., N)
        shape, x2 = x.shape[:-1], x.reshape(-1, self.in_features)
        if self.use_kernel and x.device.type == "cpu":
            y = torch.ops.aten._weight_int8pack_mm(x2.to(KERNEL_DTYPE).contiguous(), self.qweight,
                                                   self.scales.to(KERNEL_DTYPE)).to(x.dtype)
        else:
            y = F.linear(x2, dequantize_int8(self.qweight, self.scales.to(x.dtype)))
        return self._finish(y, shape)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


class Int4WeightLinear(_WeightOnlyLinear):
    """``nn.Linear`` with int4 weights: q (N, K) in 0..15, a scale and a zero per group of
    ``group_size`` input channels, ``w = (q - 8) * scale + zero``. On the CPU (and N a
    multiple of 16) ``q`` is kept only in the kernel's packed layout (K/2 bytes a row)."""

    def __init__(self, q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                 group_size: int, bias: torch.Tensor | None = None,
                 dtype: torch.dtype = torch.float32, use_kernel: bool = True):
        N, K = q.shape
        super().__init__(K, N, bias, dtype)
        check_group_size(K, group_size, "an int4 layer")
        self.group_size = group_size
        self.packed_for_cpu = use_kernel and q.device.type == "cpu" and N % 16 == 0
        if self.packed_for_cpu:
            q = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32).contiguous(),
                                                                   1)  # (N, K/2) uint8
        self.register_buffer("qweight", q.to(torch.uint8).contiguous())
        sz = torch.stack([scales.detach().T, zeros.detach().T], dim=-1)  # (K/G, N, 2)
        sdt = KERNEL_DTYPE if self.packed_for_cpu else dtype
        self.register_buffer("scales_and_zeros", sz.to(sdt).contiguous())

    @classmethod
    def from_linear(cls, layer: nn.Linear, group_size: int,
                    use_kernel: bool = True) -> Int4WeightLinear:
        check_group_size(layer.in_features, group_size, "a linear layer")
        q, s, z = quantize_int4(layer.weight, group_size)
        return cls(q, s, z, group_size, layer.bias, layer.weight.dtype, use_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., K) -> (..., N)
        shape, x2 = x.shape[:-1], x.reshape(-1, self.in_features)
        if self.packed_for_cpu:
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(
                x2.to(KERNEL_DTYPE).contiguous(), self.qweight, self.group_size,
                self.scales_and_zeros.to(KERNEL_DTYPE)).to(x.dtype)
        else:
            sz = self.scales_and_zeros.to(x.dtype)
            y = F.linear(x2, dequantize_int4(self.qweight, sz[..., 0].T, sz[..., 1].T))
        return self._finish(y, shape)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, int4, "
                f"group_size={self.group_size}")
