"""``lmforge serve MODEL_DIR [MODEL_DIR ...]``: an OpenAI-compatible HTTP server with
continuous batching and a web page (:mod:`lmforge.serve`); see docs/serve.md."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..blocks.kv_cache import kv_dtype_name, set_kv_cache_dtype
from ..errors import ConfigError
from ..inference.quant import DEFAULT_GROUP_SIZE, DEFAULT_HEAD, check_mode
from ..serve import Limits, create_app, load_all
from .arguments import (
    add_kv_cache_argument,
    non_empty_str,
    non_negative_float,
    positive_int,
)
from .output import say
from .quantize import add_quant_arguments
from .registry import Command


def read_api_key(key: str | None, key_file: str | None) -> str | None:
    """The API key from ``--api-key`` or the first line of ``--api-key-file``."""
    if key and key_file:
        raise ConfigError("give --api-key or --api-key-file, not both")
    if key_file:
        try:
            key = Path(key_file).read_text(encoding="utf-8").strip().splitlines()[0].strip()
        except (OSError, IndexError):
            raise ConfigError(f"--api-key-file {key_file}: cannot read a key from it (one "
                              "line, the key)") from None
    return key or None


def serve(model_dirs: list[str], *, host: str = "127.0.0.1", port: int = 8000,
          api_key: str | None = None, max_batch: int = 8, max_queue: int = 64,
          limits: Limits | None = None, cors_origins: list[str] | None = None,
          device: str = "cpu", dtype: str | None = None, kv_cache: str | None = None,
          quant: str | None = None, group_size: int = DEFAULT_GROUP_SIZE,
          head_quant: str = DEFAULT_HEAD) -> None:
    """Load the model directories and serve them until interrupted (Ctrl-C shuts down
    gracefully: running requests end, the engine threads stop). ``kv_cache``: the decoders'
    KV-cache precision (fp32, bf16, int8; default the compute dtype); ``quant``: int8/int4
    weights for the decoders, quantised as they load (docs/quantization.md)."""
    kv_cache = kv_dtype_name(kv_cache)  # a bad value fails before the models load
    if quant:
        check_mode(quant, group_size, head=head_quant)
    import uvicorn  # the server's own dependency, needed only by this command

    models = load_all(model_dirs, max_batch=max_batch, max_queue=max_queue, device=device,
                      dtype=dtype, quant=quant, group_size=group_size, head_quant=head_quant)
    for m in models.values():
        if m.engine is not None:  # the decoders' batcher (seq2seq caches stay as they are)
            set_kv_cache_dtype(m.engine.model, kv_cache)
    app = create_app(models, api_key=api_key, limits=limits, cors_origins=cors_origins)
    for m in models.values():
        say(f"serving {m.name} ({m.kind}, context {m.context}): {', '.join(m.capabilities())}")
    say(f"open http://{host}:{port}/  (OpenAI base URL http://{host}:{port}/v1)")
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        say("warning: listening beyond this machine without --api-key")
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=10)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dirs", nargs="+", metavar="MODEL_DIR")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this "
                   "machine only)")
    p.add_argument("--port", type=positive_int, default=8000)
    p.add_argument("--api-key", type=non_empty_str, help="require 'Authorization: Bearer KEY'")
    p.add_argument("--api-key-file", help="read the API key from this file's first line")
    p.add_argument("--max-batch", type=positive_int, default=8,
                   help="requests decoded together per model (default 8)")
    p.add_argument("--max-queue", type=positive_int, default=64,
                   help="requests waiting before the server answers 429 (default 64)")
    p.add_argument("--max-tokens-limit", type=positive_int, default=1024,
                   help="the largest max_tokens a request may ask for (default 1024)")
    p.add_argument("--default-max-tokens", type=positive_int, default=256,
                   help="max_tokens when a request leaves it out (default 256)")
    p.add_argument("--timeout", type=non_negative_float, default=300.0,
                   help="seconds a generation may take, queueing included (0 = no limit)")
    p.add_argument("--cors-origin", action="append", default=[],
                   help="allow browser pages from this origin (repeatable; default: none)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    add_kv_cache_argument(p)
    add_quant_arguments(p)


def run(args: argparse.Namespace) -> None:
    limits = Limits(max_tokens=args.max_tokens_limit, timeout=args.timeout,
                    default_max_tokens=min(args.default_max_tokens, args.max_tokens_limit))
    serve(args.model_dirs, host=args.host, port=args.port,
          api_key=read_api_key(args.api_key, args.api_key_file), max_batch=args.max_batch,
          max_queue=args.max_queue, limits=limits, cors_origins=args.cors_origin,
          device=args.device, dtype=args.dtype, kv_cache=args.kv_cache, quant=args.quant,
          group_size=args.group_size, head_quant=args.head_quant)


COMMANDS = [Command("serve", "an OpenAI-compatible HTTP server (continuous batching) with a "
                    "web page", add_arguments, run)]
