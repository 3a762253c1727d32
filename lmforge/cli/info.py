"""``lmforge info``: what a model directory holds — architecture, parameters, tokenizer,
training, provenance, generation settings, load time and memory."""

from __future__ import annotations

import argparse
import resource
import time

from ..config import to_dict
from ..inference import generation_settings
from ..inference.quant import load_for_inference
from ..inference.quant.storage import quantization_info
from ..modeldir import ModelMeta, Source, meta_to_dict
from ..modeldir.directory import verify_weights
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
    weight_bytes = sum(p.numel() * p.element_size() for p in
                       {id(p): p for p in lm.model.parameters()}.values())
    if quantization_info(model_dir) is not None:  # low-bit codes and scales are buffers
        weight_bytes += sum(b.numel() * b.element_size() for b in lm.model.buffers())
    cfg = to_dict(lm.config)
    n = lm.model.num_params()
    tok = lm.tokenizer
    tok_kind = type(tok.model).__name__
    report = {"path": str(lm.path), "parameters": n, "config": cfg,
              "tokenizer": {"model": tok_kind, "vocab_size": tok.get_vocab_size()},
              "load_seconds": round(lm.load_seconds, 3), "peak_rss_mb": round(rss_mb, 1),
              "weight_bytes": weight_bytes,
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
    say(f"parameters        {n:,} ({n / 1e6:.2f} M)")
    say(f"tokenizer         {tok_kind}, {tok.get_vocab_size():,} tokens")
    _say_history(lm.meta, source)
    say(f"generation        stops at {', '.join(report['stop_tokens']) or '(no token)'}; "
        f"chat template: {'yes' if gen.chat_template else 'no (ChatML is used)'}")
    if lm.meta.saved_at:
        say(f"saved             {lm.meta.saved_at} by lmforge {lm.meta.lmforge_version}")
    say(f"load time         {lm.load_seconds:.3f} s, peak resident memory {rss_mb:.0f} MB "
        f"(weights {weight_bytes / 2**20:.0f} MiB; float32 ones are memory-mapped, resident "
        "once used)")
    if verify:
        say("integrity         " + ("ok: model.safetensors matches the sha256 in meta.json"
                                    if recorded else "no sha256 recorded in meta.json (saved "
                                    "before lmforge recorded one): not checked")
            + f" ({verify_s:.2f} s); all weights finite")
    return report


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
