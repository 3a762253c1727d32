"""Argument groups more than one command declares (so they read and default the same)."""

from __future__ import annotations

import argparse
import math


def _number(kind: type, text: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _at_least(kind: type, low: float, strict: bool, what: str, name: str):
    """An argparse type: a ``kind`` number >= ``low`` (> ``low`` when ``strict``); argparse
    names the flag in its error, the message says what is allowed."""
    def parse(text: str):
        value = _number(kind, text)
        if value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    parse.__name__ = parse.__qualname__ = name
    return parse


positive_int = _at_least(int, 1, False, "an integer >= 1", "positive_int")
non_negative_int = _at_least(int, 0, False, "an integer >= 0", "non_negative_int")
positive_float = _at_least(float, 0, True, "a number > 0", "positive_float")
non_negative_float = _at_least(float, 0, False, "a number >= 0", "non_negative_float")


def probability(text: str) -> float:
    """argparse type: a number in (0, 1] (top-p)."""
    value = _number(float, text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def non_empty_str(text: str) -> str:
    """argparse type: a string that is not empty."""
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def labeled_data_arguments(p: argparse.ArgumentParser) -> None:
    """How to read a file of texts (and labels): ``classify`` and ``embed``."""
    p.add_argument("--format", default="auto",
                   choices=["auto", "csv", "tsv", "jsonl", "text", "label-text"],
                   help="auto = by extension: .csv .tsv .jsonl, .txt (one text a line), "
                        "anything else 'label text' lines (SST)")
    p.add_argument("--text-column", default="text")
    p.add_argument("--text-pair-column", help="second text column (sentence pairs)")
    p.add_argument("--label-column", default="label")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the results to this JSON file")


def labeled_data_options(args: argparse.Namespace) -> dict:
    """The keyword arguments :func:`labeled_data_arguments` declared, as the functions behind
    ``classify`` and ``embed`` name them (the pair column aside)."""
    return dict(fmt=args.format, text_column=args.text_column, label_column=args.label_column,
                batch_size=args.batch_size, device=args.device)


def add_compile_argument(p: argparse.ArgumentParser) -> None:
    """``--compile [full|layers]``: decode through the fused, compiled one-token step
    (:func:`lmforge.inference.compiled.enable_fast_decode`)."""
    p.add_argument("--compile", nargs="?", const="full", choices=["full", "layers"],
                   help="decode through a fused, torch.compile'd one-token step: full (the "
                   "default; the fastest, the first token waits ~1 min for the compiler) or "
                   "layers (compiles in seconds, slower); docs/quantization.md")


def add_kv_cache_argument(p: argparse.ArgumentParser) -> None:
    """``--kv-cache``: the KV cache's precision (checked by
    :func:`lmforge.blocks.kv_cache.kv_dtype_name`: a bad value is one line and exit code 2)."""
    p.add_argument("--kv-cache", metavar="fp32|bf16|int8",
                   help="store the KV cache in this precision (default: the model's compute "
                   "dtype); int8 = per-token, per-head absmax codes, ~3.8x smaller than fp32 "
                   "(docs/quantization.md)")
