"""4-bit NormalFloat (NF4) weights for QLoRA, written in plain PyTorch.

QLoRA (Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized LLMs", §3) stores the
frozen base weights of a model in 4 bits:

* **block-wise absmax scaling**: the flattened weight is cut into blocks of 64 values; each
  block is divided by its largest magnitude, so it lies in [-1, 1];
* **NF4 codes**: each normalised value is replaced by the nearest of 16 fixed levels, spaced
  as the quantiles of a standard normal distribution (the weights of trained networks are
  roughly normal), so each level is used about equally often;
* **double quantisation**: the per-block scales (one fp32 per 64 weights = 0.5 bit/param)
  are themselves quantised to 8 bits in blocks of 256 after subtracting their mean, which
  brings the scale overhead down to ~0.127 bit/param;
* two 4-bit codes are **packed** per byte (first value in the high nibble).

Storage: 0.5 + 1/64 + 4/(64*256) ~= 0.516 bytes per weight (fp32 is 4, bf16 is 2).

The weights are dequantised on the fly in :class:`NF4Linear`'s forward pass (and again in the
backward pass, so no full-precision copy is kept for autograd): gradients flow to the input —
hence to LoRA adapters of earlier layers — never to the frozen 4-bit weight.

Why not torchao's ``NF4Tensor``: torchao 0.18 installs with torch 2.13 but (i) needs the
number of blocks to be a multiple of the scale block (a weight of a multiple of 16,384 values,
which rules out small models), (ii) moved the class between releases
(``torchao.dtypes.nf4tensor`` -> ``torchao.quantization.quantize_.workflows.nf4``), (iii) prints
C-extension load failures on CPU, and (iv) rounds the NF4 levels to 4 decimals. The format is
small enough to own: ~150 lines, tested against a brute-force quantiser.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, ConfigError
from ..files.safetensors import stream_tensors
from ..modeldir.directory import (WEIGHTS, LoadedModel, check_vocab, load_tokenizer_file,
                                  read_config, read_meta, skip_init, verify_weights)
from ..modeldir.integrity import check_finite
from ..models import build_model
from ._modules import check_not_tied, select, set_submodule

# The 16 NF4 levels, as published in the QLoRA paper (Appendix E) and used by bitsandbytes
# (bitsandbytes/functional.py, ``create_normal_map(offset=0.9677083, use_extra_value=True)``):
# 8 positive and 7 negative standard-normal quantiles plus an exact zero, divided by the
# largest. :func:`nf4_levels` recomputes them from the normal quantile function.
NF4_LEVELS: tuple[float, ...] = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
)
BLOCK_SIZE = 64
"""Weights per absmax block (QLoRA: 64)."""
SCALE_BLOCK_SIZE = 256
"""Block scales per 8-bit block in the double quantisation (QLoRA: 256)."""
DEFAULT_PATTERNS: tuple[str, ...] = ("*attn.*_proj", "*.ff.*_proj")
"""Every projection in the transformer blocks (attention, cross-attention, feed-forward);
not the embeddings or the output head."""


def nf4_levels(offset: float = 0.9677083) -> torch.Tensor:
    """The NF4 levels from first principles: standard-normal quantiles of 9 (resp. 8) evenly
    spaced probabilities between ``offset`` and 0.5 for the positive (resp. negative) half,
    with 0.5 itself giving the exact zero, normalised to [-1, 1]. (16,) float64."""
    pos = torch.special.ndtri(torch.linspace(offset, 0.5, 9, dtype=torch.float64)[:-1])  # (8,)
    neg = -torch.special.ndtri(torch.linspace(offset, 0.5, 8, dtype=torch.float64)[:-1])  # (7,)
    v = torch.cat([pos, neg, torch.zeros(1, dtype=torch.float64)]).sort().values
    return v / v.max()


def _levels(device=None) -> torch.Tensor:
    return torch.tensor(NF4_LEVELS, dtype=torch.float32, device=device)  # (16,)


# -- codes and packing ---------------------------------------------------------------------------

def encode_nf4(x: torch.Tensor) -> torch.Tensor:
    """Index (uint8, 0..15) of the nearest NF4 level for each value of ``x`` (any shape,
    values normally in [-1, 1]; outside values take the end levels). Ties go to the lower
    level. Uses the 15 midpoints between neighbouring levels as bucket boundaries."""
    levels = _levels(x.device)
    mid = (levels[1:] + levels[:-1]) / 2  # (15,)
    return torch.bucketize(x.float().contiguous(), mid).to(torch.uint8)


def pack_4bit(codes: torch.Tensor) -> torch.Tensor:
    """(N,) uint8 codes < 16, N even -> (N/2,) bytes: element 2i high nibble, 2i+1 low."""
    if codes.numel() % 2:
        raise ValueError("pack_4bit needs an even number of codes")
    c = codes.reshape(-1, 2)
    return (c[:, 0] << 4) | c[:, 1]


def unpack_4bit(packed: torch.Tensor) -> torch.Tensor:
    """(N/2,) bytes -> (N,) uint8 codes (inverse of :func:`pack_4bit`)."""
    return torch.stack([packed >> 4, packed & 0x0F], dim=-1).reshape(-1)


# -- block scales and their double quantisation ------------------------------------------------

def blockwise_absmax(flat: torch.Tensor, block_size: int) -> torch.Tensor:
    """(n_blocks * block_size,) -> (n_blocks,) largest magnitude per block, float32."""
    return flat.float().reshape(-1, block_size).abs().amax(dim=1)


def quantize_scales(scales: torch.Tensor, block_size: int = SCALE_BLOCK_SIZE,
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Double quantisation: subtract the mean of the (positive) scales, then symmetric 8-bit
    absmax quantisation in blocks of ``block_size``.

    scales (n,) float -> (codes (n,) int8 in [-127, 127], step (ceil(n/block),) float32,
    offset () float32); ``scale ~= code * step[block] + offset``.
    """
    s = scales.float()
    offset = s.mean()
    centred = s - offset  # (n,)
    n = centred.numel()
    pad = -n % block_size
    groups = F.pad(centred, (0, pad)).reshape(-1, block_size)  # (G, block)
    step = groups.abs().amax(dim=1) / 127  # (G,)
    safe = torch.where(step > 0, step, torch.ones_like(step))
    codes = torch.round(groups / safe[:, None]).clamp_(-127, 127).to(torch.int8)
    return codes.reshape(-1)[:n], step, offset


def dequantize_scales(codes: torch.Tensor, step: torch.Tensor, offset: torch.Tensor,
                      block_size: int = SCALE_BLOCK_SIZE) -> torch.Tensor:
    """Inverse of :func:`quantize_scales`: (n,) int8 -> (n,) float32."""
    n = codes.numel()
    per_code = step.repeat_interleave(block_size)[:n]  # (n,)
    return codes.float() * per_code + offset


# -- a whole weight ---------------------------------------------------------------------------

@dataclass
class NF4Weight:
    """A weight matrix in NF4 with double-quantised scales (all tensors on one device)."""

    packed: torch.Tensor  # (ceil(numel / block) * block / 2,) uint8: two codes per byte
    scale_codes: torch.Tensor  # (n_blocks,) int8
    scale_step: torch.Tensor  # (ceil(n_blocks / scale_block),) float32
    scale_offset: torch.Tensor  # () float32
    shape: tuple[int, ...]
    block_size: int = BLOCK_SIZE
    scale_block_size: int = SCALE_BLOCK_SIZE

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of storage (codes, 8-bit scales, their fp32 steps and offset)."""
        return sum(t.numel() * t.element_size()
                   for t in (self.packed, self.scale_codes, self.scale_step, self.scale_offset))

    def scales(self) -> torch.Tensor:
        """(n_blocks,) float32 dequantised absmax of each block."""
        return dequantize_scales(self.scale_codes, self.scale_step, self.scale_offset,
                                 self.scale_block_size)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize_nf4(self.packed, self.scales(), self.shape, self.block_size, dtype)


_PAIR_TABLES: dict[torch.device, torch.Tensor] = {}


def _pair_table(device) -> torch.Tensor:
    """(256, 2) float32: the two NF4 levels a packed byte holds (high nibble first)."""
    device = torch.device(device)
    table = _PAIR_TABLES.get(device)
    if table is None:
        levels = _levels(device)
        byte = torch.arange(256, device=device)
        table = _PAIR_TABLES[device] = torch.stack([levels[byte >> 4], levels[byte & 15]], 1)
    return table


def dequantize_nf4(packed: torch.Tensor, scales: torch.Tensor, shape: Sequence[int],
                   block_size: int = BLOCK_SIZE, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """packed (n/2,) uint8 and per-block scales (n/block,) -> the weight of ``shape``.
    Each byte is looked up once in a 256 x 2 table of level pairs (no unpacked codes or
    64-bit indices are materialised: the temporaries are the fp32 values and the result)."""
    values = _pair_table(packed.device).index_select(0, packed.int())  # (n/2, 2) in [-1, 1]
    w = values.view(-1, block_size) * scales[:, None]  # (n_blocks, block)
    return w.view(-1)[: math.prod(shape)].view(tuple(shape)).to(dtype)


@torch.no_grad()
def quantize_nf4_weight(w: torch.Tensor, block_size: int = BLOCK_SIZE,
                        scale_block_size: int = SCALE_BLOCK_SIZE) -> NF4Weight:
    """Quantise a tensor to NF4. The codes are chosen against the *double-quantised* scales,
    so each value gets the level nearest to it after dequantisation."""
    if block_size <= 0 or block_size % 2 or scale_block_size <= 0:
        raise ConfigError(f"NF4 block sizes must be positive (block even); got {block_size}, "
                          f"{scale_block_size}")
    flat = w.detach().float().reshape(-1)
    flat = F.pad(flat, (0, -flat.numel() % block_size))  # zeros fill the last block
    scale_codes, step, offset = quantize_scales(blockwise_absmax(flat, block_size), scale_block_size)
    scales = dequantize_scales(scale_codes, step, offset, scale_block_size)  # (n_blocks,)
    # reconstruction = level * scale, so the nearest level to w / scale is the best code (a
    # scale of exactly 0 is a block of zeros whose reconstruction is 0 whatever the code)
    safe = torch.where(scales != 0, scales, torch.ones_like(scales))
    codes = encode_nf4(flat.reshape(-1, block_size) / safe[:, None])  # (n_blocks, block)
    return NF4Weight(pack_4bit(codes.reshape(-1)), scale_codes, step, offset, tuple(w.shape),
                     block_size, scale_block_size)


# -- the module -------------------------------------------------------------------------------

class _NF4Matmul(torch.autograd.Function):
    """x @ Wᵀ with W dequantised in forward and again in backward (nothing full-size saved)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: "NF4Linear") -> torch.Tensor:  # (..., in) -> (..., out)
        ctx.layer, ctx.x_dtype = layer, x.dtype
        return F.linear(x, layer.dequantize(x.dtype))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # grad (..., out)
        if not ctx.needs_input_grad[0]:
            return None, None
        w = ctx.layer.dequantize(grad.dtype)  # (out, in)
        return (grad @ w).to(ctx.x_dtype), None


def _f32_bits(t: torch.Tensor) -> torch.Tensor:
    """float32 -> its int32 bit pattern, so ``model.to(bfloat16)`` leaves the scales alone."""
    return t.detach().float().contiguous().view(torch.int32)


class NF4Linear(nn.Module):
    """A frozen linear layer whose weight is stored in NF4 (see the module docstring).

    State: ``packed`` (uint8), ``scale_codes`` (int8), ``scale_step``/``scale_offset`` (fp32
    kept as int32 bit patterns), and a frozen ``bias`` parameter when the original had one.
    Output dtype follows the input; under autocast the matrix product runs in the autocast
    dtype.
    """

    def __init__(self, q: NF4Weight, bias: torch.Tensor | None = None):
        super().__init__()
        if len(q.shape) != 2:
            raise ValueError(f"NF4Linear needs a 2-d weight, got shape {q.shape}")
        self.out_features, self.in_features = q.shape
        self.block_size, self.scale_block_size = q.block_size, q.scale_block_size
        self.register_buffer("packed", q.packed)
        self.register_buffer("scale_codes", q.scale_codes)
        self.register_buffer("scale_step", _f32_bits(q.scale_step))
        self.register_buffer("scale_offset", _f32_bits(q.scale_offset))
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False) if bias is not None else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, block_size: int = BLOCK_SIZE,
                    scale_block_size: int = SCALE_BLOCK_SIZE) -> "NF4Linear":
        q = quantize_nf4_weight(linear.weight, block_size, scale_block_size)
        return cls(q, linear.bias).to(linear.weight.device)

    def nf4_weight(self) -> NF4Weight:
        return NF4Weight(self.packed, self.scale_codes, self.scale_step.view(torch.float32),
                         self.scale_offset.view(torch.float32),
                         (self.out_features, self.in_features), self.block_size, self.scale_block_size)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The (out, in) weight in ``dtype`` (a fresh tensor, no autograd history)."""
        return self.nf4_weight().dequantize(dtype)

    @property
    def nbytes(self) -> int:
        """Bytes of the quantised weight (bias not counted)."""
        return self.nf4_weight().nbytes

    @property
    def bytes_per_param(self) -> float:
        return self.nbytes / (self.in_features * self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        y = _NF4Matmul.apply(x, self)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, nf4 block={self.block_size}, "
                f"scale block={self.scale_block_size}")


@dataclass
class NF4Report:
    layers: list[str] = field(default_factory=list)
    params: int = 0
    """Weights quantised."""
    bytes_before: int = 0
    bytes_after: int = 0

    @property
    def bytes_per_param(self) -> float:
        """Storage of the quantised matrices per weight (fp32: 4.0, NF4 ~0.516)."""
        return self.bytes_after / self.params if self.params else 0.0

    def __str__(self) -> str:
        return (f"NF4: {len(self.layers)} linear layers, {self.params:,} weights, "
                f"{self.bytes_before / 2**20:.2f} MiB -> {self.bytes_after / 2**20:.2f} MiB "
                f"({self.bytes_per_param:.3f} bytes/weight)")


def quantize_nf4(model: nn.Module, patterns: Sequence[str] = DEFAULT_PATTERNS,
                 block_size: int = BLOCK_SIZE, scale_block_size: int = SCALE_BLOCK_SIZE, *,
                 where: str = "quantize_nf4") -> NF4Report:
    """Replace the ``nn.Linear`` layers whose names match ``patterns`` by :class:`NF4Linear`,
    in place. Quantise *before* injecting LoRA (``inject_lora`` then wraps the NF4 layers).
    Every pattern must match a layer (ConfigError lists the layers there are; its message
    begins with ``where``, e.g. the config field that asked for the quantisation)."""
    if any(hasattr(m, "lora_A") for m in model.modules()):  # LoRALinear (lora.py builds on nf4)
        raise ConfigError(f"{where}: the model already has LoRA adapters; quantise the base "
                          "model first, then call inject_lora")
    names = [n for n, m in model.named_modules() if type(m) is nn.Linear]
    chosen = select(names, patterns, where)
    check_not_tied(model, chosen, where)
    report = NF4Report()
    for name in chosen:
        lin = model.get_submodule(name)
        q = NF4Linear.from_linear(lin, block_size, scale_block_size)
        set_submodule(model, name, q)
        report.layers.append(name)
        report.params += lin.weight.numel()
        report.bytes_before += lin.weight.numel() * lin.weight.element_size()
        report.bytes_after += q.nbytes
    return report


def nf4_memory(model: nn.Module) -> NF4Report:
    """The NF4 layers a model holds now, with their storage (e.g. after loading a checkpoint)."""
    report = NF4Report()
    for name, m in model.named_modules():
        if isinstance(m, NF4Linear):
            n = m.in_features * m.out_features
            report.layers.append(name)
            report.params += n
            report.bytes_before += 4 * n
            report.bytes_after += m.nbytes
    return report


# -- loading a model directory straight into NF4 ------------------------------------------


def _release_free_memory() -> None:
    """Give freed heap memory back to the system (glibc ``malloc_trim``; elsewhere nothing):
    the temporaries of each layer's quantisation would otherwise stay resident, interleaved
    with the small NF4 tensors kept."""
    global _TRIM
    if _TRIM is None:
        try:
            import ctypes  # (only where glibc's malloc_trim exists)

            _TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    if _TRIM:
        _TRIM(0)


_TRIM = None


def _quantize_while_reading(model, chosen: list[str], header: dict, read, f: Path,
                           block_size: int, scale_block_size: int) -> NF4Report:
    """Replace each ``chosen`` linear by an NF4Linear built from its weight as read from ``f``."""
    report = NF4Report()
    for name in chosen:
        lin = model.get_submodule(name)
        if f"{name}.weight" not in header:
            raise CheckpointError(f"{f} has no tensor {name}.weight")
        w = read(f"{name}.weight").float()  # (out, in)
        bias = read(f"{name}.bias").float() if lin.bias is not None else None
        q = quantize_nf4_weight(w, block_size, scale_block_size)
        set_submodule(model, name, NF4Linear(q, bias))
        report.layers.append(name)
        report.params += w.numel()
        report.bytes_before += w.numel() * 4
        report.bytes_after += q.nbytes
        del w, lin, bias
        _release_free_memory()
    return report


def _read_the_rest(model, chosen: list[str], header: dict, read, f: Path) -> None:
    """Every other tensor of the model (embeddings, norms, ...) read into place."""
    own = model.state_dict()
    done = {f"{n}.{k}" for n in chosen for k in ("weight", "bias")}
    tied = model.tied_keys() if hasattr(model, "tied_keys") else set()
    need = [k for k in own if k not in tied and not k.startswith(tuple(f"{n}." for n in chosen))]
    missing = [k for k in need if k not in header]
    unexpected = [k for k in header if k not in own and k not in done]
    if missing or unexpected:
        raise CheckpointError(f"{f} does not match config.json: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
    with torch.no_grad():
        for k in need:
            t = read(k)
            own[k].copy_(t.to(own[k].dtype) if t.is_floating_point() else t)


def load_model_dir_nf4(path, patterns: Sequence[str] = DEFAULT_PATTERNS,
                       block_size: int = BLOCK_SIZE, scale_block_size: int = SCALE_BLOCK_SIZE):
    """Load a model directory with the linear layers matching ``patterns`` quantised to NF4
    as they are read, one weight at a time: the full-precision matrices are never all in
    memory (nor mapped), so QLoRA's memory is NF4 codes + the other tensors (embeddings,
    norms) in fp32. The result equals ``load_model_dir`` followed by ``quantize_nf4`` (same
    codes). Returns (LoadedModel in eval mode, NF4Report)."""
    t0 = time.perf_counter()
    path = Path(path)
    cfg = read_config(path)
    tokenizer = load_tokenizer_file(path)
    check_vocab(tokenizer, cfg, str(path))
    with skip_init():
        model = build_model(cfg)  # uninitialised (untouched) memory, filled or dropped below
    names = [n for n, m in model.named_modules() if type(m) is nn.Linear]
    chosen = select(names, patterns, "quantize_nf4")
    check_not_tied(model, chosen, "quantize_nf4")
    f = path / WEIGHTS
    if not f.is_file():
        raise CheckpointError(f"{f} is missing; the model directory is incomplete")
    verify_weights(path)  # the sha256 meta.json records, before anything is read
    header, read_raw, fh = stream_tensors(f)

    def read(name: str) -> torch.Tensor:  # each tensor screened for NaN/inf as it is read
        t = read_raw(name)
        check_finite({name: t}, f)
        return t

    try:
        report = _quantize_while_reading(model, chosen, header, read, f, block_size,
                                         scale_block_size)
        _read_the_rest(model, chosen, header, read, f)
    finally:
        fh.close()
    model.eval()
    return LoadedModel(model, tokenizer, cfg, read_meta(path), path,
                       time.perf_counter() - t0), report
