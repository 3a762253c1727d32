"""GGUF low-bit weights used as they are: ``lmforge import model.gguf --keep-quant``.

The plain GGUF import (:mod:`.gguf`) dequantises every tensor to float. This one writes a
quantised model directory (:mod:`lmforge.inference.quant`) whose linear layers keep the file's
own codes where the formats meet:

- **Q4_1** (per 32 weights: fp16 ``d`` and ``m``, ``w = d * q + m``, q in 0..15) -> int4
  group 32: ``q`` unchanged, ``scale = d``, ``zero = m + 8 d`` (stored in float32, exact).
- **Q4_0** (per 32: fp16 ``d``, ``w = d * (q - 8)``) -> int4 group 32: ``q`` unchanged,
  ``scale = d``, ``zero = 0`` (exact).
- **Q8_0** (per 32: fp16 ``d``, ``w = d * q``, q int8) -> int8 with one scale per output row:
  dequantised and re-quantised (not exact: the row's scale is its largest block's, so the
  smaller blocks' codes are rounded again, by at most half a row step).
- other types (F32, F16, BF16, K-quants, Q5_x): quantised from the dequantised float weights
  like ``lmforge quantize`` does (int4 group 32 for the blocks, int8 for the head).

This module reads the blocks (interop sits beside inference, not above it); the command
(:func:`lmforge.cli.quantize.import_keep_quant`) writes them in the stored form.

Stored exactly is not computed exactly: the int4 CPU kernel takes its scales, zeros and
activations in bfloat16 (:data:`lmforge.inference.quant.linear.KERNEL_DTYPE`), so ``d`` and
``m + 8 d`` (fp16 values, 11 significant bits) are rounded to 8 bits at load; the dequantising
fallback (``use_kernel=False``) computes with the exact values. The embedding matrix is kept
in float (dequantised); a tied LM head comes from ``token_embd`` as above.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from .gguf import _gguf, unpermute
from .gguf_scan import scan_gguf

BLOCK = 32
DIRECT = {"Q4_0": "int4", "Q4_1": "int4", "Q8_0": "int8"}
"""GGUF type -> the layer kind its blocks become without going through float."""
_BLOCK_NAMES = {"attn_q": "attn.q_proj", "attn_k": "attn.k_proj", "attn_v": "attn.v_proj",
                "attn_output": "attn.o_proj", "ffn_gate": "ff.gate_proj",
                "ffn_up": "ff.up_proj", "ffn_down": "ff.down_proj"}


def lmforge_linear(name: str, tied: bool) -> str | None:
    """GGUF tensor name -> the lmforge linear layer it is the weight of (None: not one)."""
    if name == "output.weight" or (tied and name == "token_embd.weight"):
        return "lm_head"
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.weight", name)
    if m and m[2] in _BLOCK_NAMES:
        return f"backbone.layers.{m[1]}.{_BLOCK_NAMES[m[2]]}"
    return None


def _blocks(raw: np.ndarray, rows: int, nbytes: int) -> torch.Tensor:
    """A tensor's raw bytes -> (rows, K/32, nbytes) uint8."""
    return torch.from_numpy(np.array(raw, copy=True).view(np.uint8).reshape(rows, -1, nbytes))


def _f16(b: torch.Tensor) -> torch.Tensor:
    """(..., 2) little-endian bytes -> (...) float32."""
    return b.contiguous().view(torch.float16)[..., 0].float()


def _nibbles(qs: torch.Tensor) -> torch.Tensor:
    """(rows, nb, 16) bytes -> (rows, nb * 32) codes 0..15: within a block the low nibbles are
    weights 0..15, the high ones 16..31 (ggml's order)."""
    q = torch.cat([qs & 15, qs >> 4], dim=-1)  # (rows, nb, 32)
    return q.reshape(qs.shape[0], -1)


def q4_codes(raw: np.ndarray, kind: str, rows: int) -> tuple[torch.Tensor, ...]:
    """Q4_0 / Q4_1 bytes of a (rows, K) tensor -> q (rows, K) uint8 0..15, scales and zeros
    (rows, K/32) float32 with ``w = (q - 8) * scale + zero`` exactly."""
    if kind == "Q4_1":
        b = _blocks(raw, rows, 20)
        d, m, qs = _f16(b[..., 0:2]), _f16(b[..., 2:4]), b[..., 4:]
        return _nibbles(qs), d, m + 8 * d
    b = _blocks(raw, rows, 18)
    d = _f16(b[..., 0:2])
    return _nibbles(b[..., 2:]), d, torch.zeros_like(d)


def q8_dequantized(raw: np.ndarray, rows: int) -> torch.Tensor:
    """Q8_0 bytes of a (rows, K) tensor -> the weights (rows, K) float32."""
    b = _blocks(raw, rows, 34)
    d, qs = _f16(b[..., 0:2]), b[..., 2:].contiguous().view(torch.int8).float()
    return (qs * d[..., None]).reshape(rows, -1)


def read_lowbit(src: str | Path, cfg, model_type: str | None) -> dict[str, tuple]:
    """The linear layers of the GGUF file ``src`` (imported with config ``cfg``) stored as
    Q4_0, Q4_1 or Q8_0: name -> (GGUF type, its weights): ``(q, scales, zeros)`` codes for
    Q4_x (:func:`q4_codes`), the exactly dequantised float weight for Q8_0. q/k rows are put
    back in Hugging Face order for ``llama`` (llama.cpp permuted them; blocks lie within rows,
    so the codes move with their rows). The caller writes them in the int4 / int8 stored form
    (``lmforge import --keep-quant``: :mod:`lmforge.cli.quantize`)."""
    gguf, out = _gguf(), {}
    for t in scan_gguf(Path(src)).tensors:
        name = lmforge_linear(t.name, cfg.tie_embeddings)
        kind = gguf.GGMLQuantizationType(t.tensor_type).name
        if name is None or kind not in DIRECT:
            continue
        rows = int(t.shape[1])  # GGUF lists the innermost dimension first
        fix = lambda x: x
        if model_type == "llama" and name.endswith(("q_proj", "k_proj")):
            n = cfg.n_head if name.endswith("q_proj") else (cfg.n_kv_head or cfg.n_head)
            fix = lambda x, n=n: unpermute(x, n).contiguous()
        if kind == "Q8_0":
            out[name] = (kind, fix(q8_dequantized(t.data, rows)))
        else:
            out[name] = (kind, tuple(fix(x) for x in q4_codes(t.data, kind, rows)))
    return out
