"""Several linear layers reading the same input as one (q/k/v, gate/up): one matmul instead
of several, the outputs concatenated. For decoding at batch 1 each quantised matmul has a
fixed cost beside its weight bytes, so fewer, larger calls are faster."""

from __future__ import annotations

import torch
from torch import nn

from .linear import Int4WeightLinear, Int8WeightLinear


def _cat_bias(layers) -> torch.Tensor | None:
    biases = [layer.bias for layer in layers]
    if all(b is None for b in biases):
        return None
    return torch.cat([b if b is not None else torch.zeros(layer.out_features, dtype=layers[0]
                      .weight.dtype, device=layer.weight.device)
                      for b, layer in zip(biases, layers)])


def _fuse_int4(layers: list[Int4WeightLinear]) -> Int4WeightLinear | None:
    first = layers[0]
    if any(layer.group_size != first.group_size or not layer.packed_for_cpu or
           layer.in_features != first.in_features for layer in layers):
        return None
    new = Int4WeightLinear.__new__(Int4WeightLinear)
    nn.Module.__init__(new)
    new.in_features, new.out_features = first.in_features, sum(x.out_features for x in layers)
    new.group_size, new.packed_for_cpu = first.group_size, True
    new.register_buffer("bias", _cat_bias(layers))
    new.register_buffer("weight", first.weight, persistent=False)
    # the CPU layout packs rows in blocks whose size depends on N: layers of 64-row blocks
    # stack, others may not (e.g. 64 + 32 + 32; the check in fuse_linears refuses those)
    new.register_buffer("qweight", torch.cat([x.qweight for x in layers]).contiguous())
    new.register_buffer("scales_and_zeros",  # (K/G, N1+N2+..., 2)
                        torch.cat([x.scales_and_zeros for x in layers], dim=1).contiguous())
    return new


def _fuse_int8(layers: list[Int8WeightLinear]) -> Int8WeightLinear | None:
    first = layers[0]
    if any(x.use_kernel != first.use_kernel or x.scales.dtype != first.scales.dtype
           for x in layers):
        return None
    new = Int8WeightLinear(torch.cat([x.qweight for x in layers]),
                           torch.cat([x.scales for x in layers]), _cat_bias(layers),
                           first.weight.dtype, first.use_kernel)
    new.scales = torch.cat([x.scales for x in layers])  # keep their dtype as it was
    return new


def _fuse_float(layers: list[nn.Linear]) -> nn.Linear:
    first = layers[0]
    w = torch.cat([x.weight.detach() for x in layers])  # (N1+N2+..., K)
    bias = _cat_bias(layers)
    new = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None, device="meta")
    new.weight = nn.Parameter(w, requires_grad=False)
    if bias is not None:
        new.bias = nn.Parameter(bias.detach(), requires_grad=False)
    return new.to(first.weight.device)


def fuse_linears(layers: list[nn.Module], check: bool = True) -> nn.Module | None:
    """One layer computing ``torch.cat([layer(x) for layer in layers], -1)``, or None when the
    layers are not all of one supported kind (``nn.Linear``, :class:`Int8WeightLinear`,
    :class:`Int4WeightLinear` with the same settings) on one input size. ``check``: compare
    with the separate layers on a random input and return None unless the results agree
    (bit for bit for the quantised kernels, to float rounding for float layers). The fused
    weights are a copy: the layers are left as they are."""
    kind = type(layers[0])
    if any(type(x) is not kind for x in layers) or \
            len({x.in_features for x in layers}) != 1:
        return None
    build = {Int4WeightLinear: _fuse_int4, Int8WeightLinear: _fuse_int8,
             nn.Linear: _fuse_float}.get(kind)
    new = build(layers) if build is not None else None
    if new is None or not check:
        return new
    with torch.no_grad():
        p = layers[0].weight
        x = torch.randn(1, layers[0].in_features, dtype=p.dtype, device=p.device)
        want = torch.cat([layer(x) for layer in layers], dim=-1)
        got = new(x)
    exact = kind is not nn.Linear
    ok = torch.equal(got, want) if exact else torch.allclose(got, want, rtol=1e-4, atol=1e-5)
    return new if ok else None
