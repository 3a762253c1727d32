"""``lmforge chat MODEL_DIR``: an interactive conversation, the reply streamed token by token.

Lines are read from stdin, a terminal or a pipe (``printf 'Hi\\n/exit\\n' | lmforge chat DIR``):
``/reset`` forgets the conversation, ``/exit`` (or end of input) quits. Notices (history
dropped to fit the context) go to stderr.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from ..blocks.kv_cache import kv_dtype_name, set_kv_cache_dtype
from ..inference import ChatSession, GenerationConfig
from ..inference.chat import MessageTooLong
from ..inference.compiled import enable_fast_decode
from ..inference.settings import describe_sampling, effective_sampling
from .arguments import (
    add_compile_argument,
    add_kv_cache_argument,
    non_negative_int,
    positive_float,
    positive_int,
)
from .quantize import add_quant_arguments, load_lm
from .registry import Command

HELP = "/reset clears the conversation, /exit quits"


def _read(stdin: TextIO, interactive: bool, out: TextIO) -> str | None:
    """One line from the user, None at end of input."""
    if interactive:
        try:
            return input(">>> ")
        except EOFError:
            return None
    line = stdin.readline()
    return None if line == "" else line.rstrip("\n")


def chat(model_dir: str, system: str | None = None, max_new_tokens: int = 512,
         temperature: float | None = None, top_p: float | None = None, top_k: int | None = None,
         seed: int | None = None,
         device: str = "cpu", dtype: str | None = None, stdin: TextIO | None = None,
         stdout: TextIO | None = None, stderr: TextIO | None = None,
         adapter: str | None = None, reuse_cache: bool = True,
         repetition_penalty: float | None = None, quant: str | None = None,
         group_size: int = 32, head_quant: str = "int8", kv_cache: str | None = None,
         compile: bool | str = False):
    """Chat with the model in ``model_dir`` until ``/exit`` or the end of ``stdin``; returns
    the :class:`lmforge.inference.ChatSession` (its ``messages`` hold the conversation).
    ``reuse_cache``: keep the KV cache between turns (only the new tokens are prefilled).
    Sampling settings left None come from the model's meta.json (its recommended
    ``generation`` defaults), else lmforge's (temperature 0.7, top-p 0.9). ``kv_cache``: the
    KV cache's precision (fp32, bf16, int8; default the compute dtype). ``compile``: decode
    through the compiled one-token step (``full``/True or ``layers``)."""
    kv_cache = kv_dtype_name(kv_cache)  # a bad value fails before the model loads
    stdin, out, err = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    interactive = stdin is sys.stdin and stdin.isatty()
    lm = load_lm(model_dir, device, dtype, adapter, quant, group_size, head_quant)
    set_kv_cache_dtype(lm.model, kv_cache)
    if compile:
        enable_fast_decode(lm.model, compile=compile)
    sampling = effective_sampling(lm.meta, temperature=temperature, top_k=top_k, top_p=top_p,
                                  repetition_penalty=repetition_penalty)
    gen = sampling.apply(GenerationConfig(max_new_tokens=max_new_tokens, seed=seed))
    session = ChatSession.from_loaded(lm, system=system, gen=gen, reuse_cache=reuse_cache,
                                      on_notice=lambda m: print(f"[{m}]", file=err, flush=True))
    if session.template is None:
        print("[the model has no chat template; using ChatML]", file=err, flush=True)
    print(f"[chatting with {model_dir} ({lm.model.num_params() / 1e6:.0f}M parameters); "
          f"{describe_sampling(sampling)}; {HELP}]", file=err, flush=True)
    while (line := _read(stdin, interactive, out)) is not None:
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            break
        if text == "/reset":
            session.reset()
            print("[conversation cleared]", file=out, flush=True)
            continue
        if text.startswith("/") and " " not in text:
            print(f"[unknown command {text}; {HELP}]", file=err, flush=True)
            continue
        if not interactive:
            print(f">>> {text}", file=out, flush=True)  # a transcript when input is piped
        try:
            for piece in session.send(text):
                print(piece, end="", file=out, flush=True)
        except MessageTooLong as e:  # the session goes on without that message
            print(f"[{e}]", file=err, flush=True)
            continue
        print(file=out, flush=True)
    return session


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir")
    p.add_argument("--system", help="system message (default: the chat template's own, if any)")
    p.add_argument("--max-new-tokens", type=positive_int, default=512,
                   help="longest reply, in tokens")
    p.add_argument("--temperature", type=float, help="0 = greedy (default: the model's "
                   "recommended value from its meta.json, else 0.7)")
    p.add_argument("--top-p", type=float, help="default: the model's, else 0.9")
    p.add_argument("--repetition-penalty", type=positive_float,
                   help=">1 makes tokens already present less likely (default: the model's, "
                   "else 1 = off)")
    p.add_argument("--top-k", type=non_negative_int,
                   help="default: the model's, else 0 (all tokens)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--adapter", help="a LoRA adapter directory to merge into the model first")
    p.add_argument("--no-reuse-cache", dest="reuse_cache", action="store_false",
                   help="prefill the whole conversation every turn instead of keeping the KV "
                   "cache between turns (slower; for comparison)")
    add_quant_arguments(p)
    add_kv_cache_argument(p)
    add_compile_argument(p)


def run(args: argparse.Namespace) -> None:
    chat(args.model_dir, system=args.system, max_new_tokens=args.max_new_tokens,
         temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, seed=args.seed,
         device=args.device, dtype=args.dtype, adapter=args.adapter,
         reuse_cache=args.reuse_cache, repetition_penalty=args.repetition_penalty,
         quant=args.quant, group_size=args.group_size, head_quant=args.head_quant,
         kv_cache=args.kv_cache, compile=args.compile or False)


COMMANDS = [Command("chat", "talk with a chat model (e.g. an imported SmolLM2), the reply "
                    "streamed as it is generated", add_arguments, run)]
