"""``lmforge quantize MODEL_DIR --out DIR --quant int8|int4``: a model directory with int8 or
int4 weights for fast CPU decoding (:mod:`lmforge.inference.quant`, docs/quantization.md);
generate, chat and eval load it as they load any model directory. Also the ``--quant`` flags
generate and chat share (quantise a float directory as it is loaded)."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from ..errors import CheckpointError, ConfigError
from ..files.guard import check_output, replace_directory
from ..files.lock import lock_output
from ..finetune import load_with_adapter
from ..inference.quant import (
    DEFAULT_GROUP_SIZE,
    DEFAULT_HEAD,
    HEAD_MODES,
    MODES,
    check_mode,
    load_for_inference,
    quantization_info,
    quantize_dir,
)
from ..inference.quant.linear import pack_nibbles, quantize_int8
from ..inference.quant.model import stored_form
from ..inference.quant.storage import write_quantized_dir
from ..interop.gguf import import_gguf
from ..interop.gguf_lowbit import BLOCK, read_lowbit
from ..modeldir import LoadedModel, load_model_dir
from ..modeldir.directory import WEIGHTS
from .arguments import positive_int
from .output import say
from .registry import Command


def add_quant_arguments(p: argparse.ArgumentParser, required: bool = False) -> None:
    """``--quant``, ``--group-size`` and ``--head-quant`` (checked by
    :func:`lmforge.inference.quant.check_mode`: a bad value is one line and exit code 2)."""
    p.add_argument("--quant", required=required, metavar="|".join(MODES),
                   help="weight-only quantisation of the linear layers" +
                   ("" if required else " (quantised as the model is loaded)"))
    p.add_argument("--group-size", type=positive_int, default=DEFAULT_GROUP_SIZE,
                   help=f"int4: input channels per scale and zero (32, 64, 128 or 256; default "
                   f"{DEFAULT_GROUP_SIZE}); it must divide every layer's input size")
    p.add_argument("--head-quant", default=DEFAULT_HEAD, metavar="|".join(HEAD_MODES),
                   help=f"the LM head's quantisation (default {DEFAULT_HEAD}: int4 heads cost "
                   "the most accuracy)")


def load_lm(model_dir: str, device: str = "cpu", dtype: str | None = None,
            adapter: str | None = None, quant: str | None = None,
            group_size: int = DEFAULT_GROUP_SIZE, head_quant: str = DEFAULT_HEAD) -> LoadedModel:
    """What generate and chat load: a quantised directory as such, else the float model (with
    ``adapter`` merged), quantised with ``quant`` when given."""
    if quant:
        check_mode(quant, group_size, head=head_quant)
    loader = (lambda: load_with_adapter(model_dir, adapter, device, dtype)) if adapter else None
    return load_for_inference(model_dir, device, dtype, quant, group_size, head_quant, loader)


def quantize(model_dir: str, out: str, quant: str, group_size: int = DEFAULT_GROUP_SIZE,
             head_quant: str = DEFAULT_HEAD, overwrite: bool = False) -> Path:
    """Write ``model_dir`` quantised to ``out`` (never the input; a non-empty ``out`` only
    with ``overwrite``; written beside it and renamed into place)."""
    t0 = time.perf_counter()
    check_mode(quant, group_size, head=head_quant)
    check_output(out, [model_dir], overwrite)
    with lock_output(out):
        path = replace_directory(out, lambda tmp: quantize_dir(model_dir, tmp, quant,
                                                               group_size, head_quant))
    before = (Path(model_dir) / WEIGHTS).stat().st_size
    after = (path / WEIGHTS).stat().st_size
    group = f", group size {group_size}" if "int4" in (quant, head_quant) else ""
    say(f"quantised {model_dir} to {quant}{group} (LM head {head_quant}) in "
        f"{time.perf_counter() - t0:.1f} s -> {path}")
    say(f"  weights {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB")
    say(f"  use it with: lmforge generate {path} --prompt ...")
    return path


def import_gguf_lowbit(src: str | Path, out_dir: str | Path, head: str = DEFAULT_HEAD) -> Path:
    """A GGUF file as a quantised model directory, its Q4_0 / Q4_1 / Q8_0 linear weights used
    directly (:mod:`lmforge.interop.gguf_lowbit` says what is exact); the other linear layers
    quantised from the float import (int4 group 32, the LM head ``head``)."""
    with tempfile.TemporaryDirectory(dir=Path(out_dir).parent) as tmp:
        lm = load_model_dir(import_gguf(src, Path(tmp) / "float"))  # config, tokenizer, meta
        direct = read_lowbit(src, lm.config, lm.meta.source and lm.meta.source.model_type)
        tensors = {k: v.clone() for k, v in lm.model.state_dict().items()}  # (unmapped)
    if not direct:
        raise CheckpointError(f"{src} has no Q4_0, Q4_1 or Q8_0 linear weights to keep; "
                              "import it without --keep-quant")
    if lm.config.tie_embeddings:
        tensors.pop("lm_head.weight", None)
    kinds = {}
    for name, mod in lm.model.named_modules():
        if not isinstance(mod, torch.nn.Linear) or name not in direct and \
                name == "lm_head" and head == "float":
            continue
        tensors.pop(f"{name}.weight", None)
        kind, w = direct.get(name, (None, mod.weight))
        if kind == "Q8_0":  # dequantised, re-quantised per row (not exact)
            tensors[f"{name}.qweight"], tensors[f"{name}.scales"] = quantize_int8(w)
        elif kind:  # Q4_0 / Q4_1 codes as they are
            tensors.update({f"{name}.qweight4": pack_nibbles(w[0]), f"{name}.scales": w[1],
                            f"{name}.zeros": w[2]})
        else:
            kind = f"requantised {head if name == 'lm_head' else 'int4'}"
            tensors.update(stored_form(w, name, kind.split()[1], BLOCK))
        kinds[name] = kind
    info = {"mode": "gguf", "group_size": BLOCK, "lm_head": kinds.get("lm_head", "float"),
            "gguf_types": sorted(set(kinds.values())), "quantized_from": str(Path(src).resolve())}
    return write_quantized_dir(out_dir, lm.config, tensors, lm.tokenizer, lm.meta, info)


def import_keep_quant(src: str, out: str, overwrite: bool = False) -> Path:
    """``lmforge import FILE.gguf --keep-quant``: a quantised model directory whose linear
    layers keep the file's Q4_0 / Q4_1 / Q8_0 codes (:mod:`lmforge.interop.gguf_lowbit`)."""
    if Path(src).suffix.lower() != ".gguf":
        raise ConfigError(f"--keep-quant: {src} is not a .gguf file; for other checkpoints use "
                          "`lmforge import` then `lmforge quantize`")
    t0 = time.perf_counter()
    check_output(out, [src], overwrite)
    with lock_output(out):
        path = replace_directory(out, lambda tmp: import_gguf_lowbit(src, tmp))
    info = quantization_info(path) or {}
    say(f"imported {src} keeping its low-bit weights in {time.perf_counter() - t0:.1f} s "
        f"-> {path}")
    say(f"  linear layers     {', '.join(info.get('gguf_types', []))}; LM head "
        f"{info.get('lm_head')}")
    return path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", help="a float model directory")
    p.add_argument("--out", required=True, help="the quantised model directory to write")
    add_quant_arguments(p, required=True)
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out if it is not empty (its old contents are removed)")


def run(args: argparse.Namespace) -> None:
    quantize(args.model_dir, args.out, args.quant, args.group_size, args.head_quant,
             args.overwrite)


COMMANDS = [Command("quantize", "int8 / int4 weights for fast CPU decoding", add_arguments, run)]
