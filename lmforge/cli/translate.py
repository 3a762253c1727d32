"""``lmforge translate``: translate sentences with an encoder–decoder
(:class:`lmforge.inference.translate.Translator`), optionally plotting the cross-attention."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..files.text import read_text_file
from ..errors import DataError
from ..inference.translate import DecodeConfig
from ..tasks.evaluate import load_translator
from ..viz import plot_attention as plot
from .output import say
from .arguments import non_negative_float, positive_float, positive_int
from .registry import Command


def _lines(path: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{path} does not exist; give a file of source sentences, one a line")
    return read_text_file(p).splitlines()


def translate(model_dir: str, texts: list[str] | None = None, data: str | None = None,
              out: str | None = None, decode: DecodeConfig | None = None, batch_size: int = 64,
              device: str = "cpu", long_inputs: str = "truncate",
              plot_attention: str | None = None, heads: str = "mean",
              layer: int = -1) -> list[str]:
    """Translate ``texts`` or the lines of ``data``; print them or write them to ``out``
    (``plot_attention``: a PNG of the first sentence's cross-attention in decoder ``layer``)."""
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
        say(f"translated {len(hyps)} sentences in {dt:.1f} s ({len(hyps) / dt:.1f}/s, beam "
            f"{decode.beam_size}) -> {out}")
    else:
        for h in hyps:
            say(h)
    if plot_attention:
        w, src_tok, tgt_tok = tr.cross_attention(sources[0], tr.translate_ids(
            tr.encode_sources(sources[:1]), decode)[0])
        n_layers = w.shape[0]
        path = plot(w[layer], src_tok, tgt_tok, plot_attention, heads=heads,
                    title=f"cross-attention, decoder layer {layer % n_layers + 1} of {n_layers}")
        say(f"cross-attention heatmap -> {path}")
    return hyps


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", action="append", help="a sentence to translate (repeatable)")
    src.add_argument("--data", help="a file of source sentences, one a line (.gz too)")
    p.add_argument("--out", help="write the translations here, one a line (default: print)")
    p.add_argument("--long-inputs", default="truncate", choices=["truncate", "error"],
                   help="a source longer than the model's context: cut it (with a warning) "
                        "or refuse")
    p.add_argument("--plot-attention", metavar="PNG",
                   help="save the cross-attention of the first sentence as a heatmap")
    p.add_argument("--heads", default="mean", choices=["mean", "all"],
                   help="heatmap: heads averaged, or one panel per head")
    p.add_argument("--layer", type=int, default=-1, help="heatmap: decoder layer (default last)")
    p.add_argument("--beam", type=int, default=4, help="beam size (1 = greedy search)")
    p.add_argument("--length-penalty", type=non_negative_float, default=1.0,
                   help="rank finished beams by logp / length ** this")
    p.add_argument("--max-len-ratio", type=positive_float, default=1.5,
                   help="at most ratio x source tokens (+ 10) target tokens")
    p.add_argument("--no-early-stopping", dest="early_stopping", action="store_false",
                   help="search on until no running beam can beat the finished ones")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--device", default="cpu")


def run(args: argparse.Namespace) -> None:
    decode = DecodeConfig(beam_size=args.beam, length_penalty=args.length_penalty,
                          max_len_ratio=args.max_len_ratio, early_stopping=args.early_stopping)
    translate(args.model_dir, args.text, args.data, args.out, decode, args.batch_size,
              args.device, args.long_inputs, args.plot_attention, args.heads, args.layer)


COMMANDS = [Command("translate", "translate text with an encoder–decoder model",
                    add_arguments, run)]
