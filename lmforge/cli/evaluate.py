"""``lmforge eval``: perplexity of a language model, BLEU and chrF of an encoder–decoder — the
choice is :func:`lmforge.tasks.evaluate.evaluate_model_dir`'s, by the model's architecture."""

from __future__ import annotations

import argparse

from ..tasks.evaluate import evaluate_model_dir
from .arguments import non_negative_float, non_negative_int, positive_int
from .output import say, write_json
from .registry import Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir")
    p.add_argument("--data", required=True, nargs="+", help="text (language models); source "
                   "sentences, or a TSV/JSONL of pairs (encoder–decoders)")
    p.add_argument("--ref",
                   help="encoder–decoder: reference translations, line-aligned with --data")
    p.add_argument("--beam", type=positive_int, default=4,
                   help="encoder–decoder: beam size (1 = greedy)")
    p.add_argument("--length-penalty", type=non_negative_float, default=1.0)
    p.add_argument("--limit", type=non_negative_int, default=0,
                   help="encoder–decoder: first N sentences only")
    p.add_argument("--samples", type=non_negative_int, default=5,
                   help="encoder–decoder: translations to show next to their references")
    p.add_argument("--stride", type=positive_int,
                   help="sliding-window stride (default: half the context)")
    p.add_argument("--batch-size", type=positive_int,
                   help="default 8 (language models), 64 (translation)")
    p.add_argument("--max-chars", type=non_negative_int, default=0,
                   help="evaluate only the first N characters")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--baseline", metavar="BASE_DIR", help="also score the model before "
                   "fine-tuning and print both perplexities and the change (forgetting)")


def run(args: argparse.Namespace) -> None:
    figures = evaluate_model_dir(
        args.model_dir, args.data, ref=args.ref, beam=args.beam,
        length_penalty=args.length_penalty, limit=args.limit, samples=args.samples,
        stride=args.stride, batch_size=args.batch_size, max_chars=args.max_chars,
        baseline=args.baseline, device=args.device, say=say)
    write_json(figures, args.json)


COMMANDS = [Command("eval", "perplexity and bits per character/byte on held-out text; "
                    "BLEU and chrF for an encoder–decoder", add_arguments, run)]
