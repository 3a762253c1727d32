"""``lmforge import`` and ``lmforge export``: a Hugging Face model directory or a GGUF file to
an lmforge model directory and back (:mod:`lmforge.interop`), and LoRA adapters to and from
Hugging Face PEFT's format (:mod:`lmforge.finetune.peft_format`)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..errors import ConfigError
from ..finetune.peft_format import export_peft, import_peft
from ..files.guard import check_output, replace_directory
from ..files.lock import lock_output
from ..interop import export_hf, import_hf
from ..interop.gguf import import_gguf
from ..interop.gguf_export import export_gguf
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


def import_peft_adapter(src: str, base: str, out: str, overwrite: bool = False) -> Path:
    """Convert a PEFT LoRA adapter directory into an lmforge adapter directory for the model
    directory ``base`` (imported from the adapter's HF base); ``out`` guarded as above."""
    check_output(out, [src, base], overwrite)
    with lock_output(out):
        path = replace_directory(out, lambda tmp: import_peft(src, base, tmp))
    say(f"imported PEFT adapter {src} for {base} -> {path}")
    say(f"  use it with: lmforge generate {base} --adapter {path}")
    return path


def _export_hf(model_dir: str, out: str, overwrite: bool, base: str | None) -> Path:
    check_output(out, [model_dir], overwrite)
    with lock_output(out):
        path = replace_directory(out, lambda tmp: export_hf(model_dir, tmp))
    arch = json.loads((path / "config.json").read_text(encoding="utf-8"))["architectures"][0]
    say(f"exported {model_dir} as {arch} -> {path}")
    auto = "AutoModelForSeq2SeqLM" if "MarianMT" in arch else "AutoModelForCausalLM"
    say(f"  load it with transformers.{auto}.from_pretrained({str(path)!r})")
    return path


def _export_peft(adapter_dir: str, out: str, overwrite: bool, base: str | None) -> Path:
    if not base:
        raise ConfigError("--format peft needs --base MODEL_DIR: the model directory the "
                          "adapter was trained on (its HF family names the PEFT modules)")
    check_output(out, [adapter_dir, base], overwrite)
    with lock_output(out):
        path = replace_directory(out, lambda tmp: export_peft(adapter_dir, base, tmp))
    say(f"exported adapter {adapter_dir} as a PEFT LoRA adapter -> {path}")
    say(f"  load it with peft.PeftModel.from_pretrained(model, {str(path)!r}) onto the model "
        f"`lmforge export {base} --format hf` writes")
    return path


def _export_gguf(model_dir: str, out: str, overwrite: bool, base: str | None,
                 quant: str = "f16") -> Path:
    check_output(out, [model_dir], overwrite, kind="file")
    with lock_output(out):
        info = export_gguf(model_dir, out, quant)
    say(f"exported {model_dir} as GGUF {info['architecture']} ({quant}, pre-tokenizer "
        f"{info['pre']}) -> {out}")
    say(f"  tensors           {', '.join(f'{n} {k}' for k, n in info['tensor_types'].items())}")
    say("  load it with llama.cpp, or transformers.AutoModelForCausalLM.from_pretrained(DIR, "
        "gguf_file=NAME)")
    return Path(out)


EXPORTERS = {"hf": _export_hf, "peft": _export_peft, "gguf": _export_gguf}
"""--format -> exporter(source, out, overwrite, base[, quant]); add a format with one entry."""


def export_model(model_dir: str, fmt: str, out: str, overwrite: bool = False,
                 base: str | None = None, quant: str | None = None) -> Path:
    """Write an lmforge model directory in another format (``hf``: Hugging Face
    transformers), or an adapter directory (``peft``, with ``base`` its model directory);
    ``out`` guarded, locked and written whole as for :func:`import_model`."""
    if fmt not in EXPORTERS:
        raise ConfigError(f"--format {fmt!r} is not supported; choose {', '.join(EXPORTERS)}")
    if quant is not None and fmt != "gguf":
        raise ConfigError(f"--quant is for --format gguf, not --format {fmt}")
    return EXPORTERS[fmt](model_dir, out, overwrite, base, **({"quant": quant} if quant else {}))


def add_import_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="Hugging Face model directory, or a .gguf file (llama, qwen2), "
                   "or a PEFT LoRA adapter directory with --adapter-for")
    p.add_argument("--out", required=True, help="model (or adapter) directory to write")
    p.add_argument("--adapter-for", metavar="MODEL_DIR",
                   help="src is a PEFT LoRA adapter: convert it to an lmforge adapter for this "
                   "model directory (imported from the adapter's HF base model)")
    p.add_argument("--dtype", choices=DTYPES,
                   help="cast the weights (default: keep the checkpoint's)")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.add_argument("--keep-quant", action="store_true", help="a .gguf file: keep its Q4_0/Q4_1/"
                   "Q8_0 weights as int4/int8 (a quantised model directory; docs/quantization.md)")


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", help="model directory (hf) or adapter directory (peft)")
    p.add_argument("--format", default="hf", choices=list(EXPORTERS),
                   help="hf = Hugging Face transformers (GPT2LMHeadModel / LlamaForCausalLM); "
                   "peft = a LoRA adapter directory as a Hugging Face PEFT adapter; "
                   "gguf = one .gguf file (llama.cpp; llama, qwen2, gpt2)")
    p.add_argument("--base", metavar="MODEL_DIR",
                   help="with --format peft: the model directory the adapter was trained on")
    p.add_argument("--out", required=True, help="directory to write (a .gguf file for gguf)")
    p.add_argument("--quant", metavar="TYPE", help="with --format gguf: f32, f16 (default), "
                   "q8_0 or q4_0 (docs/interop.md)")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)


def run_import(args: argparse.Namespace) -> None:
    if args.adapter_for:
        import_peft_adapter(args.src, args.adapter_for, args.out, args.overwrite)
        return
    if args.keep_quant:  # lmforge.cli.quantize owns the low-bit import
        from .quantize import import_keep_quant
        import_keep_quant(args.src, args.out, args.overwrite)
        return
    import_model(args.src, args.out, args.dtype, args.overwrite)


def run_export(args: argparse.Namespace) -> None:
    export_model(args.model_dir, args.format, args.out, args.overwrite, args.base, args.quant)


COMMANDS = [
    Command("import", "convert a Hugging Face model directory (GPT-2, Llama, Mistral, Qwen2, "
            "BERT) or a GGUF file into an lmforge model directory", add_import_arguments,
            run_import),
    Command("export", "write a model directory in another format", add_export_arguments,
            run_export),
]
