"""``lmforge translate`` and ``lmforge eval`` on an encoder–decoder: plain functions plus their
argument parser (``lmforge.cli.main`` adds it with :func:`add_translate_parser`)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..errors import ConfigError, DataError


def _print(*a) -> None:
    print(*a, flush=True)


def _decode_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--beam", type=int, default=4, help="beam size (1 = greedy search)")
    p.add_argument("--length-penalty", type=float, default=1.0,
                   help="rank finished beams by logp / length ** this")
    p.add_argument("--max-len-ratio", type=float, default=1.5,
                   help="at most ratio x source tokens (+ 10) target tokens")
    p.add_argument("--no-early-stopping", dest="early_stopping", action="store_false",
                   help="search on until no running beam can beat the finished ones")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")


def add_translate_parser(sub) -> None:
    t = sub.add_parser("translate", help="translate text with an encoder–decoder model")
    t.add_argument("model_dir")
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", action="append", help="a sentence to translate (repeatable)")
    src.add_argument("--data", help="a file of source sentences, one a line (.gz too)")
    t.add_argument("--out", help="write the translations here, one a line (default: print)")
    t.add_argument("--long-inputs", default="truncate", choices=["truncate", "error"],
                   help="a source longer than the model's context: cut it (with a warning) "
                        "or refuse")
    t.add_argument("--plot-attention", metavar="PNG",
                   help="save the cross-attention of the first sentence as a heatmap")
    t.add_argument("--heads", default="mean", choices=["mean", "all"],
                   help="heatmap: heads averaged, or one panel per head")
    t.add_argument("--layer", type=int, default=-1, help="heatmap: decoder layer (default last)")
    _decode_args(t)


def _decode_config(args):
    from ..inference.translate import DecodeConfig

    return DecodeConfig(beam_size=args.beam, length_penalty=args.length_penalty,
                        max_len_ratio=args.max_len_ratio, early_stopping=args.early_stopping)


def load_translator(model_dir: str, device: str = "cpu", long_inputs: str = "truncate"):
    from ..inference.translate import Translator
    from ..io import load_model_dir
    from ..io.model_dir import load_source_tokenizer

    lm = load_model_dir(model_dir, device=device)
    if lm.config.arch != "seq2seq":
        raise ConfigError(f"{model_dir} is a {lm.config.arch} model; translation needs an "
                          "encoder–decoder (model.arch = \"seq2seq\")")
    return Translator(lm.model, lm.tokenizer, lm.meta, long_inputs=long_inputs,
                      src_tokenizer=load_source_tokenizer(model_dir))


def _lines(path: str) -> list[str]:
    from ..data.sources import read_text_file

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{path} does not exist; give a file of source sentences, one a line")
    return read_text_file(p).splitlines()


def translate(model_dir: str, texts: list[str] | None = None, data: str | None = None,
              out: str | None = None, decode=None, batch_size: int = 64, device: str = "cpu",
              long_inputs: str = "truncate", plot_attention: str | None = None,
              heads: str = "mean", layer: int = -1) -> list[str]:
    """Translate ``texts`` or the lines of ``data``; print them or write them to ``out``."""
    from ..inference.translate import DecodeConfig

    decode = decode or DecodeConfig()
    tr = load_translator(model_dir, device, long_inputs)
    sources = list(texts) if texts else _lines(data)
    empty = [i + 1 for i, s in enumerate(sources) if not s.strip()]
    if empty:
        where = f"{data}, line" if data else "--text number"
        raise DataError(f"{where} {empty[0]} is empty" + (f" (and {len(empty) - 1} more)" if
                        len(empty) > 1 else "") + "; remove empty lines")
    t0 = time.perf_counter()
    hyps = tr.translate(sources, decode, batch_size)
    dt = time.perf_counter() - t0
    if out:
        Path(out).write_text("\n".join(hyps) + "\n", encoding="utf-8")
        _print(f"translated {len(hyps)} sentences in {dt:.1f} s ({len(hyps) / dt:.1f}/s, beam "
               f"{decode.beam_size}) -> {out}")
    else:
        for h in hyps:
            _print(h)
    if plot_attention:
        from ..viz import plot_attention as plot

        w, src_tok, tgt_tok = tr.cross_attention(sources[0], tr.translate_ids(
            tr.encode_sources(sources[:1]), decode)[0])
        path = plot(w[layer], src_tok, tgt_tok, plot_attention, heads=heads,
                    title=f"cross-attention, decoder layer {layer % w.shape[0] + 1} of {w.shape[0]}")
        _print(f"cross-attention heatmap -> {path}")
    return hyps


def evaluate_translation(model_dir: str, data: str, ref: str | None = None, decode=None,
                         batch_size: int = 64, device: str = "cpu", limit: int = 0,
                         samples: int = 5, fmt: str = "auto") -> dict:
    """BLEU and chrF (sacrebleu) of the model's translations of ``data`` against ``ref`` (two
    line-aligned files) or of a TSV/JSONL pairs file, plus a few examples side by side."""
    from ..data import read_parallel
    from ..evaluation.translation import side_by_side, translation_scores
    from ..inference.translate import DecodeConfig

    decode = decode or DecodeConfig()
    pairs = read_parallel(data, ref, fmt=fmt)
    src, refs = pairs.src, pairs.tgt
    if limit:
        src, refs = src[:limit], refs[:limit]
    tr = load_translator(model_dir, device)
    t0 = time.perf_counter()
    hyps = tr.translate(src, decode, batch_size)
    dt = time.perf_counter() - t0
    s = translation_scores(hyps, refs)
    _print(f"evaluated {model_dir} on {data}" + (f" against {ref}" if ref else ""))
    _print(f"  sentences         {s.n} (beam {decode.beam_size}, {dt:.1f} s, {s.n / dt:.1f}/s)")
    _print(f"  BLEU              {s.bleu:.2f}")
    _print(f"  chrF              {s.chrf:.2f}")
    _print(f"  signature         {s.signature}")
    if samples:
        _print(side_by_side(src, hyps, refs, n=samples))
    return {"bleu": s.bleu, "chrf": s.chrf, "n": s.n, "signature": s.signature,
            "beam_size": decode.beam_size, "seconds": round(dt, 2)}


def run_translate(args) -> None:
    translate(args.model_dir, args.text, args.data, args.out, _decode_config(args),
              args.batch_size, args.device, args.long_inputs, args.plot_attention, args.heads,
              args.layer)
