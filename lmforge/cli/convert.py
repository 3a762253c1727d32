"""``lmforge import`` and ``lmforge export``: a Hugging Face model directory or a GGUF file to
an lmforge model directory and back (:mod:`lmforge.interop`)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..errors import ConfigError
from ..files.guard import check_output, replace_directory
from ..files.lock import lock_output
from ..interop import export_hf, import_hf
from ..interop.gguf import import_gguf
from ..modeldir import Source, read_config, read_meta
from .output import say
from .registry import Command

DTYPES = ["float32", "bfloat16", "float16"]
OVERWRITE_HELP = "replace --out if it is not empty (its old contents are removed)"


def import_model(src: str, out: str, dtype: str | None = None, overwrite: bool = False) -> Path:
    """Convert a Hugging Face model directory (or a GGUF file) into an lmforge model directory.
    ``out`` must not be (inside) ``src``, nor a non-empty directory unless ``overwrite``; it
    is locked while written and appears whole (:func:`lmforge.files.guard.replace_directory`)."""
    t0 = time.perf_counter()
    check_output(out, [src], overwrite)
    convert = import_gguf if Path(src).suffix.lower() == ".gguf" else import_hf
    with lock_output(out):
        path = replace_directory(out, lambda tmp: convert(src, tmp, dtype))
    cfg = read_config(path)
    meta = read_meta(path)
    source = meta.imported_source() or Source(kind="imported")
    say(f"imported {src} in {time.perf_counter() - t0:.1f} s -> {path}")
    say(f"  family            {source.family} (model_type {source.model_type}), "
        f"{source.dtype} weights")
    if source.tensor_types:
        say(f"  GGUF tensors      {', '.join(source.tensor_types)} (dequantised)")
    say(f"  architecture      {cfg.n_layer} layers, d_model {cfg.d_model}, {cfg.n_head} heads "
        f"({cfg.n_kv_head or cfg.n_head} kv), context {cfg.context_length}, vocab {cfg.vocab_size}")
    gen = meta.generation
    if gen:
        say(f"  generation        stop ids {gen.eos_token_ids}, chat template: "
            f"{'yes' if gen.chat_template else 'no'}")
    return path


def export_model(model_dir: str, fmt: str, out: str, overwrite: bool = False) -> Path:
    """Write an lmforge model directory in another format (``hf``: Hugging Face transformers);
    ``out`` guarded, locked and written whole as for :func:`import_model`."""
    if fmt != "hf":
        raise ConfigError(f"--format {fmt!r} is not supported; choose hf")
    check_output(out, [model_dir], overwrite)
    with lock_output(out):
        path = replace_directory(out, lambda tmp: export_hf(model_dir, tmp))
    arch = json.loads((path / "config.json").read_text(encoding="utf-8"))["architectures"][0]
    say(f"exported {model_dir} as {arch} -> {path}")
    auto = "AutoModelForSeq2SeqLM" if "MarianMT" in arch else "AutoModelForCausalLM"
    say(f"  load it with transformers.{auto}.from_pretrained({str(path)!r})")
    return path


def add_import_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="Hugging Face model directory, or a .gguf file (llama, qwen2)")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--dtype", choices=DTYPES,
                   help="cast the weights (default: keep the checkpoint's)")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir")
    p.add_argument("--format", default="hf", choices=["hf"],
                   help="hf = Hugging Face transformers (GPT2LMHeadModel / LlamaForCausalLM)")
    p.add_argument("--out", required=True, help="directory to write")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)


def run_import(args: argparse.Namespace) -> None:
    import_model(args.src, args.out, args.dtype, args.overwrite)


def run_export(args: argparse.Namespace) -> None:
    export_model(args.model_dir, args.format, args.out, args.overwrite)


COMMANDS = [
    Command("import", "convert a Hugging Face model directory (GPT-2, Llama, Mistral, Qwen2, "
            "BERT) or a GGUF file into an lmforge model directory", add_import_arguments,
            run_import),
    Command("export", "write a model directory in another format", add_export_arguments,
            run_export),
]
