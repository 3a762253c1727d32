"""``lmforge info``: what a model directory holds — architecture, parameters, tokenizer,
training, provenance, generation settings, load time and memory."""

from __future__ import annotations

import argparse
import resource
import time

import torch

from ..config import to_dict
from ..inference import generation_settings
from ..inference.quant import load_for_inference
from ..inference.quant.storage import quantization_info
from ..modeldir import ModelMeta, Source, meta_to_dict
from ..modeldir.directory import verify_weights
from ..models import build_model
from .output import say, write_json
from .registry import Command


def info(model_dir: str, verify: bool = False) -> dict:
    """Load ``model_dir``, print its description and return it as a dict (``--json``);
    ``verify``: first check model.safetensors against the sha256 meta.json records (a mismatch
    is a CheckpointError; loading refuses non-finite weights either way)."""
    t0 = time.perf_counter()
    recorded = verify_weights(model_dir) if verify else None
    verify_s = time.perf_counter() - t0
    lm = load_for_inference(model_dir)  # (a quantised directory too)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    source = lm.meta.imported_source()
    gen = generation_settings(lm.meta, lm.tokenizer)
    quant = quantization_info(model_dir)
    n, weight_bytes = _weights(lm, quant is not None)
    cfg = to_dict(lm.config)
    tok = lm.tokenizer
    tok_kind = type(tok.model).__name__
    report = {"path": str(lm.path), "parameters": n, "config": cfg,
              "tokenizer": {"model": tok_kind, "vocab_size": tok.get_vocab_size()},
              "load_seconds": round(lm.load_seconds, 3), "peak_rss_mb": round(rss_mb, 1),
              "weight_bytes": weight_bytes, "quantization": quant,
              "source": to_dict(source) if source else None,
              "stop_tokens": [lm.tokenizer.id_to_token(i) for i in gen.eos_token_ids],
              "chat_template": gen.chat_template is not None, "meta": meta_to_dict(lm.meta)}
    if verify:
        report["verify"] = {"sha256": "ok" if recorded else "not recorded", "finite": True,
                            "seconds": round(verify_s, 3)}
    say(f"model directory   {lm.path}")
    say(f"architecture      {cfg['arch']}: {cfg['n_layer']} layers, d_model {cfg['d_model']}, "
        f"{cfg['n_head']} heads ({cfg.get('n_kv_head') or cfg['n_head']} kv), "
        f"context {cfg['context_length']}")
    say(f"blocks            {'pre' if cfg['prenorm'] else 'post'}-norm {cfg['norm']}, "
        f"{cfg['activation']} feed-forward ({lm.config.ff_dim}), {cfg['positional']} positions, "
        f"{cfg['attention']} attention, tied embeddings: {cfg['tie_embeddings']}")
    say(f"parameters        {n:,} ({n / 1e6:.2f} M)" + _quant_note(quant, n, weight_bytes))
    say(f"tokenizer         {tok_kind}, {tok.get_vocab_size():,} tokens")
    _say_history(lm.meta, source)
    say(f"generation        stops at {', '.join(report['stop_tokens']) or '(no token)'}; "
        f"chat template: {'yes' if gen.chat_template else 'no (ChatML is used)'}")
    if lm.meta.saved_at:
        say(f"saved             {lm.meta.saved_at} by lmforge {lm.meta.lmforge_version}")
    say(f"load time         {lm.load_seconds:.3f} s, peak resident memory {rss_mb:.0f} MB "
        f"(weights {_mib(weight_bytes)}; float32 ones are memory-mapped, resident once used)")
    if verify:
        say("integrity         " + ("ok: model.safetensors matches the sha256 in meta.json"
                                    if recorded else "no sha256 recorded in meta.json (saved "
                                    "before lmforge recorded one): not checked")
            + f" ({verify_s:.2f} s); all weights finite")
    return report


def _weights(lm, quantized: bool) -> tuple[int, int]:
    """(parameters, bytes of the weights as loaded). A quantised model holds its linear
    layers as int8/int4 codes and scales (buffers, not parameters): its parameter count is that
    of the float model its config describes, its bytes those of every stored tensor (once
    each: tied weights, and not the position tables made at load)."""
    tensors = {(t.data_ptr(), t.numel(), t.dtype): t for t in lm.model.state_dict().values()
               if t.numel()}
    nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
    if not quantized:
        return lm.model.num_params(), nbytes
    with torch.device("meta"):  # the float model's shapes, no memory
        n = build_model(lm.config).num_params()
    return n, nbytes


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.0f} MiB" if nbytes >= 2**20 else f"{nbytes / 2**10:.0f} KiB"


def _quant_note(quant: dict | None, n: int, nbytes: int) -> str:
    """", quantised ..." for the parameters line of a quantised directory, else ""."""
    if quant is None:
        return ""
    group = f", group size {quant['group_size']}" if quant.get("group_size") else ""
    return (f"; quantised {quant.get('mode')}{group} (LM head {quant.get('lm_head')}): "
            f"{_mib(nbytes)} of weights ({nbytes * 8 / max(n, 1):.1f} bits per parameter, "
            f"float32 {_mib(4 * n)})")


def _say_history(meta: ModelMeta, source: Source | None) -> None:
    """The training, data and import lines of ``info``."""
    if meta.training:
        t = meta.training
        say(f"training          {t.get('step')} steps, {t.get('tokens', 0):,} tokens, "
            f"{t.get('elapsed_s', 0):.0f} s; val loss {t.get('val_loss')}, "
            f"best {t.get('best_val_loss')}")
    if meta.data:
        say(f"data              {', '.join(meta.data.get('paths', []))}")
    if source:
        types = ", ".join(source.tensor_types or [])
        extra = "".join(f", {k} {v}" for k, v in (("name", source.name),
                                                   ("tensor types", types)) if v)
        say(f"imported from     {source.path} ({source.format}, "
            f"model_type {source.model_type}{extra})")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir")
    p.add_argument("--json", help="also write the report to this JSON file")
    p.add_argument("--verify", action="store_true", help="check model.safetensors against the "
                   "sha256 recorded in meta.json and say ok (or why not)")


def run(args: argparse.Namespace) -> None:
    write_json(info(args.model_dir, verify=args.verify), args.json)


COMMANDS = [Command("info", "architecture, parameters, tokenizer, provenance", add_arguments, run)]
