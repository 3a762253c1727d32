"""The CLI's commands as plain functions: each takes ordinary arguments, does the work through
the library, and prints what a person wants to see. ``lmforge.cli.main`` only parses argv."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..errors import ConfigError


def _print(*a) -> None:
    print(*a, flush=True)


def tokenizer_train(files: list[str], kind: str = "bpe", vocab_size: int = 4096,
                    out: str = "tokenizer.json", min_frequency: int = 2,
                    special_tokens: list[str] | None = None) -> dict:
    from ..data import read_documents
    from ..tokenizers import save_tokenizer, tokenizer_report, train_tokenizer

    t0 = time.perf_counter()
    tok = train_tokenizer(files, kind=kind, vocab_size=vocab_size, min_frequency=min_frequency,
                          special_tokens=special_tokens)
    path = save_tokenizer(tok, out)
    report = tokenizer_report(tok, (d.text for d in read_documents(files)))
    report["seconds"] = round(time.perf_counter() - t0, 2)
    _print(f"trained a {kind} tokenizer in {report['seconds']} s -> {path}")
    _print(f"  vocabulary size   {report['vocab_size']:,}")
    _print(f"  characters        {report['n_chars']:,}")
    _print(f"  tokens            {report['n_tokens']:,}")
    _print(f"  chars per token   {report['chars_per_token']:.3f}")
    return report


def train(config: str | None = None, overrides: list[str] | None = None, preset: str | None = None,
          resume: bool = False, overwrite: bool = False):
    from ..tasks import train_task
    from ..training import RunConfig

    if not config and not preset:
        raise ConfigError("give a config file (lmforge train CONFIG.toml) or --preset NAME")
    cfg = RunConfig.load(config, overrides, preset)
    run = train_task(cfg, resume=resume, overwrite=overwrite)
    r = run.result
    _print(f"done: {r.step} steps, {r.tokens:,} tokens in {r.elapsed_s:.0f} s "
           f"({r.tokens_per_s:,.0f} tokens/s)")
    if r.val_loss is not None:
        ppl = f", perplexity {torch.tensor(r.val_loss).exp():.2f}" if cfg.task == "pretrain" else ""
        _print(f"  validation loss {r.val_loss:.4f} (best {r.best_val_loss:.4f}){ppl}")
    if run.report:
        _print(run.report)
    for name, value in run.metrics.items():
        _print(f"  {name:<16} {value:.4f}" if isinstance(value, float) else f"  {name:<16} {value}")
    _print(f"  model directory  {run.out_dir}")
    if run.plot:
        _print(f"  loss curve       {run.plot}")
    return run


def generate(model_dir: str, prompt: str, max_new_tokens: int = 200, temperature: float = 0.8,
             top_k: int = 0, top_p: float = 1.0, seed: int | None = None,
             stop: list[str] | None = None, num_samples: int = 1, device: str = "cpu",
             dtype: str | None = None, stream: bool = True, chat: bool = False,
             adapter: str | None = None) -> list[str]:
    """Continue ``prompt`` (with ``chat``: answer it as a user message, through the model's
    chat template). Generation stops at the model's own end-of-sequence tokens (recorded at
    import), else at the tokenizer's ``<|endoftext|>``."""
    from ..inference import ChatSession, GenerationConfig, generation_settings, stream_ids
    from ..io import load_model_dir

    lm = load_model_dir(model_dir, device=device, dtype=dtype, adapter=adapter)
    settings = generation_settings(lm.meta, lm.tokenizer)
    eos = settings.eos_token_ids
    ids = lm.tokenizer.encode(prompt).ids
    if chat:
        session = ChatSession(lm.model, lm.tokenizer, settings=settings)
        session.messages.append({"role": "user", "content": prompt})
        ids, eos = session.prompt_ids(), session.stop_ids
    outs = []
    for i in range(num_samples):
        gcfg = GenerationConfig(max_new_tokens=max_new_tokens, temperature=temperature,
                                top_k=top_k, top_p=top_p,
                                seed=None if seed is None else seed + i, stop=list(stop or []))
        if num_samples > 1:
            _print(f"--- sample {i + 1} ---")
        pieces = []
        if stream and not chat:
            print(prompt, end="", flush=True)
        for piece in stream_ids(lm.model, lm.tokenizer, ids, gcfg, eos):
            pieces.append(piece)
            if stream:
                print(piece, end="", flush=True)
        if stream:
            print(flush=True)
        outs.append("".join(pieces))
    return outs


def model_arch(model_dir: str) -> str:
    """``arch`` of a model directory's config (decoder, encoder, seq2seq)."""
    from ..io.model_dir import read_config

    return read_config(model_dir).arch


def evaluate(model_dir: str, data: str | list[str], stride: int | None = None, batch_size: int = 8,
             device: str = "cpu", text_field: str = "text", max_chars: int = 0,
             baseline: str | None = None) -> dict:
    """Perplexity of ``model_dir`` on ``data``; with ``baseline`` (the model before
    fine-tuning) also the baseline's perplexity and the change (the forgetting report)."""
    from ..data import read_documents
    from ..evaluation import text_perplexity
    from ..io import load_model_dir
    from ..tokenizers import eos_token_id

    lm = load_model_dir(model_dir, device=device)
    text = "\n\n".join(d.text for d in read_documents(data, text_field=text_field))
    if max_chars:
        text = text[:max_chars]
    t0 = time.perf_counter()
    if baseline:
        return _evaluate_against(lm, load_model_dir(baseline, device=device), text, model_dir,
                                 baseline, data, stride, batch_size, t0)
    res = text_perplexity(lm.model, lm.tokenizer, text, stride=stride, batch_size=batch_size,
                          bos_id=eos_token_id(lm.tokenizer))
    out = res.to_dict()
    out["seconds"] = round(time.perf_counter() - t0, 2)
    _print(f"evaluated {model_dir} on {data}")
    _print(f"  tokens            {res.n_tokens:,} ({res.n_chars:,} characters, {res.n_bytes:,} bytes)")
    _print(f"  loss              {res.loss:.4f} nats/token")
    _print(f"  perplexity        {res.perplexity:.3f}")
    _print(f"  bits per char     {res.bits_per_char:.4f}")
    _print(f"  bits per byte     {res.bits_per_byte:.4f}")
    _print(f"  window / stride   {res.context} / {res.stride} tokens")
    return out


def _evaluate_against(lm, base, text: str, model_dir: str, baseline: str, data, stride,
                      batch_size: int, t0: float) -> dict:
    from ..evaluation.forgetting import format_forgetting, general_perplexity, compare_perplexity

    ctx = min(lm.config.context_length, base.config.context_length)
    before = general_perplexity(base.model, base.tokenizer, text, stride=stride,
                                batch_size=batch_size, context=ctx)
    after = general_perplexity(lm.model, lm.tokenizer, text, stride=stride,
                               batch_size=batch_size, context=ctx)
    out = {**after.to_dict(), "baseline": {"model_dir": baseline, **before.to_dict()},
           "forgetting": compare_perplexity(before, after),
           "seconds": round(time.perf_counter() - t0, 2)}
    _print(f"evaluated {model_dir} against the baseline {baseline} on {data}")
    _print(f"  tokens            {after.n_tokens:,} ({after.n_chars:,} characters, "
           f"{after.n_bytes:,} bytes); window / stride {after.context} / {after.stride}")
    _print(f"  baseline          loss {before.loss:.4f}, perplexity {before.perplexity:.3f}, "
           f"{before.bits_per_byte:.4f} bits/byte")
    _print(f"  model             loss {after.loss:.4f}, perplexity {after.perplexity:.3f}, "
           f"{after.bits_per_byte:.4f} bits/byte")
    _print(format_forgetting(out["forgetting"]).splitlines()[-1])
    return out


def info(model_dir: str) -> dict:
    import resource

    from ..config import to_dict
    from ..inference import generation_settings
    from ..io import load_model_dir

    lm = load_model_dir(model_dir)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    source = lm.meta.get("imported_from") or lm.meta.get("source")
    gen = generation_settings(lm.meta, lm.tokenizer)
    weight_bytes = sum(p.numel() * p.element_size() for p in
                       {id(p): p for p in lm.model.parameters()}.values())
    cfg = to_dict(lm.config)
    n = lm.model.num_params()
    tok = lm.tokenizer
    tok_kind = type(tok.model).__name__
    report = {"path": str(lm.path), "parameters": n, "config": cfg,
              "tokenizer": {"model": tok_kind, "vocab_size": tok.get_vocab_size()},
              "load_seconds": round(lm.load_seconds, 3), "peak_rss_mb": round(rss_mb, 1),
              "weight_bytes": weight_bytes, "source": source,
              "stop_tokens": [lm.tokenizer.id_to_token(i) for i in gen.eos_token_ids],
              "chat_template": gen.chat_template is not None, "meta": lm.meta}
    _print(f"model directory   {lm.path}")
    _print(f"architecture      {cfg['arch']}: {cfg['n_layer']} layers, d_model {cfg['d_model']}, "
           f"{cfg['n_head']} heads ({cfg.get('n_kv_head') or cfg['n_head']} kv), "
           f"context {cfg['context_length']}")
    _print(f"blocks            {'pre' if cfg['prenorm'] else 'post'}-norm {cfg['norm']}, "
           f"{cfg['activation']} feed-forward ({lm.config.ff_dim}), {cfg['positional']} positions, "
           f"{cfg['attention']} attention, tied embeddings: {cfg['tie_embeddings']}")
    _print(f"parameters        {n:,} ({n / 1e6:.2f} M)")
    _print(f"tokenizer         {tok_kind}, {tok.get_vocab_size():,} tokens")
    meta = lm.meta
    if "training" in meta:
        t = meta["training"]
        _print(f"training          {t.get('step')} steps, {t.get('tokens', 0):,} tokens, "
               f"{t.get('elapsed_s', 0):.0f} s; val loss {t.get('val_loss')}, best {t.get('best_val_loss')}")
    if "data" in meta:
        _print(f"data              {', '.join(meta['data'].get('paths', []))}")
    if source:
        types = ", ".join(source.get("tensor_types") or [])
        extra = "".join(f", {k} {v}" for k, v in (("name", source.get("name")),
                                                   ("tensor types", types)) if v)
        _print(f"imported from     {source.get('path')} ({source.get('format')}, "
               f"model_type {source.get('model_type')}{extra})")
    _print(f"generation        stops at {', '.join(report['stop_tokens']) or '(no token)'}; "
           f"chat template: {'yes' if gen.chat_template else 'no (ChatML is used)'}")
    if "saved_at" in meta:
        _print(f"saved             {meta['saved_at']} by lmforge {meta.get('lmforge_version')}")
    _print(f"load time         {lm.load_seconds:.3f} s, peak resident memory {rss_mb:.0f} MB "
           f"(weights {weight_bytes / 2**20:.0f} MiB; float32 ones are memory-mapped, resident "
           "once used)")
    return report


def import_model(src: str, out: str, dtype: str | None = None) -> Path:
    """Convert a Hugging Face model directory (or a GGUF file) into an lmforge model directory."""
    from ..io.model_dir import read_config, read_meta

    t0 = time.perf_counter()
    if Path(src).suffix.lower() == ".gguf":
        from ..interop.gguf import import_gguf

        path = import_gguf(src, out, dtype)
    else:
        from ..interop import import_hf

        path = import_hf(src, out, dtype)
    cfg = read_config(path)
    meta = read_meta(path)
    source = meta.get("imported_from", {})
    _print(f"imported {src} in {time.perf_counter() - t0:.1f} s -> {path}")
    _print(f"  family            {source.get('family')} (model_type {source.get('model_type')}), "
           f"{source.get('dtype')} weights")
    if source.get("tensor_types"):
        _print(f"  GGUF tensors      {', '.join(source['tensor_types'])} (dequantised)")
    _print(f"  architecture      {cfg.n_layer} layers, d_model {cfg.d_model}, {cfg.n_head} heads "
           f"({cfg.n_kv_head or cfg.n_head} kv), context {cfg.context_length}, vocab {cfg.vocab_size}")
    gen = meta.get("generation") or {}
    if gen:
        _print(f"  generation        stop ids {gen.get('eos_token_ids')}, chat template: "
               f"{'yes' if gen.get('chat_template') else 'no'}")
    return path


def export_model(model_dir: str, fmt: str, out: str) -> Path:
    """Write an lmforge model directory in another format (``hf``: Hugging Face transformers)."""
    if fmt != "hf":
        raise ConfigError(f"--format {fmt!r} is not supported; choose hf")
    from ..interop import export_hf

    path = export_hf(model_dir, out)
    arch = json.loads((path / "config.json").read_text(encoding="utf-8"))["architectures"][0]
    _print(f"exported {model_dir} as {arch} -> {path}")
    auto = "AutoModelForSeq2SeqLM" if "MarianMT" in arch else "AutoModelForCausalLM"
    _print(f"  load it with transformers.{auto}.from_pretrained({str(path)!r})")
    return path


def average(model_dirs: list[str], out: str, weights: list[float] | None = None) -> Path:
    """Write the weight average of ``model_dirs`` to ``out`` (lmforge.training.average)."""
    from ..training.average import average_model_dirs

    path = average_model_dirs(model_dirs, out, weights)
    _print(f"averaged {len(model_dirs)} models -> {path}")
    return path


def dump_json(obj, path: str | None) -> None:
    if path:
        Path(path).write_text(json.dumps(obj, indent=2, default=str), encoding="utf-8")
