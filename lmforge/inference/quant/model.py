"""Quantising a whole model (every ``nn.Linear``, the LM head optionally) and the portable
tensors a quantised model directory stores.

Stored names, for a linear layer ``NAME`` (the float ``NAME.weight`` is left out):

- int8: ``NAME.qweight`` int8 (N, K), ``NAME.scales`` float32 (N,)
- int4: ``NAME.qweight4`` uint8 (N, K/2), two values 0..15 a byte, element 2i in the low
  nibble (:func:`~.linear.pack_nibbles`); ``NAME.scales`` and ``NAME.zeros`` float32
  (N, K/G), ``w = (q - 8) * scale + zero``; the group size is K / (number of groups)
- ``NAME.bias`` as before, when the layer has one.

Embeddings stay in float (a lookup reads one row per token; the bandwidth is in the matmuls).
A tied LM head is quantised as its own copy of the embedding matrix.
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import CheckpointError, ConfigError
from .linear import (
    Int4WeightLinear,
    Int8WeightLinear,
    check_group_size,
    pack_nibbles,
    quantize_int4,
    quantize_int8,
    unpack_nibbles,
)

MODES = ("int8", "int4")
DEFAULT_GROUP_SIZE = 32
"""Int4's default: the smallest group, the closest to the float model (and Q4_0/Q4_1's)."""
HEAD = "lm_head"


HEAD_MODES = ("int8", "int4", "float")
DEFAULT_HEAD = "int8"
"""The LM head's default: int8 whatever the mode. Measured on SmolLM2-135M (tied head, 28% of
the weights; docs/quantization.md): int4 blocks + int8 head raise perplexity 0.6%, an int4 head
6%; an int8 head costs 0.2% and reads a quarter of float32's bytes."""


def plan(model: nn.Module, mode: str, head: str = DEFAULT_HEAD) -> dict[str, str]:
    """Linear-layer name -> ``int8`` / ``int4`` for every ``nn.Linear`` of ``model`` (the LM
    head ``lm_head`` gets ``head``; ``float`` leaves it out)."""
    out = {}
    for n, m in model.named_modules():
        if isinstance(m, nn.Linear):
            kind = head if n == HEAD else mode
            if kind != "float":
                out[n] = kind
    return out


def check_mode(mode: str, group_size: int, model: nn.Module | None = None,
               head: str = DEFAULT_HEAD) -> dict[str, str]:
    """A one-line ConfigError for an unknown mode or head mode, or a group size that is not
    supported or does not divide some int4 layer's input features; returns :func:`plan`."""
    if mode not in MODES:
        raise ConfigError(f"--quant {mode!r}: choose one of {', '.join(MODES)}")
    if head not in HEAD_MODES:
        raise ConfigError(f"--head-quant {head!r}: choose one of {', '.join(HEAD_MODES)}")
    if "int4" in (mode, head):
        check_group_size(group_size, group_size, "")
    kinds = plan(model, mode, head) if model is not None else {}
    for name, kind in kinds.items():
        if kind == "int4":
            check_group_size(model.get_submodule(name).in_features, group_size, name)
    return kinds


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    owner, _, attr = name.rpartition(".")
    setattr(model.get_submodule(owner) if owner else model, attr, module)


def quantize_model(model: nn.Module, mode: str, group_size: int = DEFAULT_GROUP_SIZE,
                   head: str = DEFAULT_HEAD, use_kernel: bool = True) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` (in place) by an :class:`Int8WeightLinear` or
    an :class:`Int4WeightLinear` (``mode``; the LM head by ``head``: int8, int4 or float),
    quantised from its weight; returns ``model``. Quantise on the device the model will run
    on (the int4 CPU layout is packed for the CPU)."""
    for name, kind in check_mode(mode, group_size, model, head).items():
        layer = model.get_submodule(name)
        new = (Int8WeightLinear.from_linear(layer, use_kernel) if kind == "int8" else
               Int4WeightLinear.from_linear(layer, group_size, use_kernel))
        _set(model, name, new)
    return model


def quantized_tensors(model: nn.Module, mode: str, group_size: int = DEFAULT_GROUP_SIZE,
                      head: str = DEFAULT_HEAD) -> dict[str, torch.Tensor]:
    """The state dict of ``model`` (float) with its linear layers in the stored quantised form
    (see the module docstring); tied tensors once."""
    kinds = check_mode(mode, group_size, model, head)
    out, seen = {}, set()
    for key, t in model.state_dict().items():
        owner, _, attr = key.rpartition(".")
        if owner in kinds and attr == "weight":
            continue
        if t.numel() and (t.data_ptr(), t.shape) in seen:
            continue  # a tied copy
        seen.add((t.data_ptr(), t.shape))
        out[key] = t.detach().contiguous().cpu()
    for name, kind in kinds.items():
        out.update(stored_form(model.get_submodule(name).weight, name, kind, group_size))
    return {k: v.contiguous() for k, v in out.items()}


def stored_form(w: torch.Tensor, name: str, kind: str, group_size: int) -> dict:
    """The stored tensors of the linear layer ``name`` with weight ``w``, quantised as ``kind``."""
    if kind == "int8":
        q, s = quantize_int8(w)
        return {f"{name}.qweight": q, f"{name}.scales": s}
    q, s, z = quantize_int4(w, group_size)
    return {f"{name}.qweight4": pack_nibbles(q), f"{name}.scales": s, f"{name}.zeros": z}


def stored_linears(tensors: dict[str, torch.Tensor]) -> dict[str, str]:
    """Linear-layer name -> ``int8`` / ``int4`` for the quantised layers in ``tensors``."""
    out = {}
    for key in tensors:
        if key.endswith(".qweight"):
            out[key[:-len(".qweight")]] = "int8"
        elif key.endswith(".qweight4"):
            out[key[:-len(".qweight4")]] = "int4"
    return out


def linear_from_tensors(tensors: dict[str, torch.Tensor], name: str, dtype: torch.dtype,
                        use_kernel: bool = True) -> nn.Module:
    """The quantised layer ``name`` built from its stored tensors."""
    bias = tensors.get(f"{name}.bias")
    if f"{name}.qweight" in tensors:
        # a copy: a memory-mapped tensor may be unaligned for the kernel's vector loads
        return Int8WeightLinear(tensors[f"{name}.qweight"].clone(), tensors[f"{name}.scales"],
                                bias, dtype, use_kernel)
    q = unpack_nibbles(tensors[f"{name}.qweight4"])  # (N, K)
    scales, zeros = tensors[f"{name}.scales"], tensors[f"{name}.zeros"]
    return Int4WeightLinear(q, scales, zeros, q.shape[1] // scales.shape[1], bias, dtype,
                            use_kernel)


def _check_layer(tensors: dict[str, torch.Tensor], name: str, kind: str,
                 layer: nn.Linear, where: str) -> None:
    N, K = layer.out_features, layer.in_features
    if kind == "int8":
        want = {"qweight": ((N, K), torch.int8), "scales": ((N,), None)}
    else:
        s = tensors.get(f"{name}.scales")
        groups = s.shape[1] if s is not None and s.dim() == 2 else 0
        if not groups or K % groups or (K // groups) % 2:
            raise CheckpointError(f"{where}: {name}.scales does not fit {name} ({N}x{K}); the "
                                  "file is corrupt")
        want = {"qweight4": ((N, K // 2), torch.uint8), "scales": ((N, groups), None),
                "zeros": ((N, groups), None)}
    for part, (shape, dt) in want.items():
        t = tensors.get(f"{name}.{part}")
        if t is None or tuple(t.shape) != shape or (dt is not None and t.dtype != dt) or \
                (dt is None and not t.is_floating_point()):
            got = None if t is None else (tuple(t.shape), str(t.dtype))
            raise CheckpointError(f"{where}: {name}.{part} should be {shape}"
                                  f"{'' if dt is None else ' ' + str(dt)}, got {got}; the file "
                                  "is corrupt or not for this config.json")


def check_quantized(model: nn.Module, tensors: dict[str, torch.Tensor], where: str) -> dict:
    """Refuse stored tensors that do not fit ``model`` (built from config.json): every
    quantised name a linear layer of the right shape, every other tensor a float one the
    model has. Returns :func:`stored_linears`."""
    kinds = stored_linears(tensors)
    mods = dict(model.named_modules())
    for name, kind in kinds.items():
        if not isinstance(mods.get(name), nn.Linear):
            raise CheckpointError(f"{where}: {name} is stored quantised but the model has no "
                                  "linear layer of that name")
        _check_layer(tensors, name, kind, mods[name], where)
    parts = {f"{n}.{p}" for n in kinds for p in ("qweight", "qweight4", "scales", "zeros", "bias",
                                                 "weight")}
    tied = model.tied_keys() if hasattr(model, "tied_keys") else set()
    want = {k for k in model.state_dict() if k not in parts}
    missing = sorted(want - tensors.keys() - tied)
    unexpected = sorted(tensors.keys() - want - parts)
    if missing or unexpected:
        raise CheckpointError(f"{where}: the weights do not fit config.json: missing "
                              f"{missing[:5]}, unexpected {unexpected[:5]}")
    return kinds
