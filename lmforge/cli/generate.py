"""``lmforge generate``: continue a prompt (or answer it through the chat template), streaming
the text as it is generated (:func:`lmforge.inference.stream_ids`)."""

from __future__ import annotations

import argparse

from ..blocks.kv_cache import kv_dtype_name, set_kv_cache_dtype
from ..inference import ChatSession, GenerationConfig, generation_settings, stream_ids
from ..inference.compiled import enable_fast_decode
from ..inference.settings import Sampling, effective_sampling
from .arguments import (
    add_compile_argument,
    add_kv_cache_argument,
    non_empty_str,
    non_negative_int,
    positive_float,
    positive_int,
)
from .output import say
from .quantize import add_quant_arguments, load_lm
from .registry import Command

GENERATE_SAMPLING = Sampling(temperature=0.8, top_k=0, top_p=1.0)
"""`lmforge generate`'s own defaults, where neither the user nor the model says."""


def generate(model_dir: str, prompt: str, max_new_tokens: int = 200,
             temperature: float | None = None, top_k: int | None = None,
             top_p: float | None = None, seed: int | None = None,
             stop: list[str] | None = None, num_samples: int = 1, device: str = "cpu",
             dtype: str | None = None, stream: bool = True, chat: bool = False,
             adapter: str | None = None, repetition_penalty: float | None = None,
             quant: str | None = None, group_size: int = 32, head_quant: str = "int8",
             ignore_eos: bool = False, kv_cache: str | None = None,
             compile: bool | str = False) -> list[str]:
    """Continue ``prompt`` (with ``chat``: answer it as a user message, through the model's
    chat template). Generation stops at the model's own end-of-sequence tokens (recorded at
    import), else at the tokenizer's ``<|endoftext|>``. Sampling settings left None come from
    the model's meta.json (its recommended ``generation`` defaults), else
    :data:`GENERATE_SAMPLING`. ``quant``: int8/int4 weights (docs/quantization.md);
    ``ignore_eos``: exactly ``max_new_tokens`` tokens (unless a stop string ends them);
    ``kv_cache``: the KV cache's precision (fp32, bf16, int8; default the compute dtype);
    ``compile``: decode through the compiled one-token step (``full``/True or ``layers``;
    lmforge.inference.compiled)."""
    kv_cache = kv_dtype_name(kv_cache)  # a bad value fails before the model loads
    lm = load_lm(model_dir, device, dtype, adapter, quant, group_size, head_quant)
    set_kv_cache_dtype(lm.model, kv_cache)
    if compile:
        enable_fast_decode(lm.model, compile=compile)
    settings = generation_settings(lm.meta, lm.tokenizer)
    sampling = effective_sampling(lm.meta, temperature=temperature, top_k=top_k, top_p=top_p,
                                  repetition_penalty=repetition_penalty,
                                  defaults=GENERATE_SAMPLING)
    eos = settings.eos_token_ids
    ids = lm.tokenizer.encode(prompt).ids
    if chat:
        session = ChatSession(lm.model, lm.tokenizer, settings=settings)
        session.messages.append({"role": "user", "content": prompt})
        ids, eos = session.prompt_ids(), session.stop_ids
    outs = []
    for i in range(num_samples):
        gcfg = sampling.apply(GenerationConfig(max_new_tokens=max_new_tokens,
                                               seed=None if seed is None else seed + i,
                                               stop=list(stop or []),
                                               stop_at_eos=not ignore_eos))
        if num_samples > 1:
            say(f"--- sample {i + 1} ---")
        pieces = []
        if stream and not chat:
            print(prompt, end="", flush=True)
        for piece in stream_ids(lm.model, lm.tokenizer, ids, gcfg, eos):
            pieces.append(piece)
            if stream:
                print(piece, end="", flush=True)
        if stream:
            say()
        outs.append("".join(pieces))
    return outs


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=positive_int, default=200)
    p.add_argument("--temperature", type=float, help="0 = greedy (default: the "
                   "model's recommended value from its meta.json, else 0.8)")
    p.add_argument("--greedy", action="store_true", help="same as --temperature 0")
    p.add_argument("--top-k", type=non_negative_int,
                   help="default: the model's, else 0 (all tokens)")
    p.add_argument("--top-p", type=float, help="default: the model's, else 1.0")
    p.add_argument("--repetition-penalty", type=positive_float,
                   help=">1 makes tokens already present less likely (default: the model's, "
                   "else 1 = off)")
    p.add_argument("--seed", type=int)
    p.add_argument("--stop", type=non_empty_str, action="append", default=[],
                   help="stop string (repeatable)")
    p.add_argument("--num-samples", type=positive_int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--adapter", help="a LoRA adapter directory to merge into the model first")
    p.add_argument("--chat", action="store_true",
                   help="answer the prompt as a user message, through the model's chat template")
    p.add_argument("--ignore-eos", action="store_true",
                   help="do not stop at end-of-sequence tokens: exactly --max-new-tokens tokens")
    add_quant_arguments(p)
    add_kv_cache_argument(p)
    add_compile_argument(p)


def run(args: argparse.Namespace) -> None:
    generate(args.model_dir, args.prompt, args.max_new_tokens,
             0.0 if args.greedy else args.temperature, args.top_k, args.top_p, args.seed,
             args.stop, args.num_samples, args.device, args.dtype, chat=args.chat,
             adapter=args.adapter, repetition_penalty=args.repetition_penalty,
             quant=args.quant, group_size=args.group_size, head_quant=args.head_quant,
             ignore_eos=args.ignore_eos, kv_cache=args.kv_cache, compile=args.compile or False)


COMMANDS = [Command("generate", "generate text from a model directory", add_arguments, run)]
