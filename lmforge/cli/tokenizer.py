"""``lmforge tokenizer train``: train a tokenizer on text files and report its compression
(:func:`lmforge.tokenizers.train_tokenizer`, :func:`lmforge.tokenizers.tokenizer_report`)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..data import read_documents
from ..errors import ConfigError
from ..files.guard import check_output
from ..files.lock import lock_output
from ..tokenizers import save_tokenizer, tokenizer_report, train_tokenizer
from ..tokenizers.special import SEQ2SEQ_SPECIAL_TOKENS
from .output import say, say_fields
from .registry import Command


def tokenizer_train(files: list[str], kind: str = "bpe", vocab_size: int = 4096,
                    out: str = "tokenizer.json", min_frequency: int = 2,
                    special_tokens: list[str] | None = None, overwrite: bool = False) -> dict:
    """Train a ``kind`` tokenizer on ``files``, save it to ``out`` and print its vocabulary
    size and characters per token; returns the report. An existing ``out`` is replaced only
    with ``overwrite``, and never inside a model directory (its ids would no longer match)."""
    t0 = time.perf_counter()
    check_tokenizer_out(out, files, overwrite)
    with lock_output(out):  # one writer at a time (the lock sits beside the file)
        check_tokenizer_out(out, files, overwrite)  # again, now that no one else writes
        tok = train_tokenizer(files, kind=kind, vocab_size=vocab_size,
                              min_frequency=min_frequency, special_tokens=special_tokens)
        path = save_tokenizer(tok, out)
    report = tokenizer_report(tok, (d.text for d in read_documents(files)))
    report["seconds"] = round(time.perf_counter() - t0, 2)
    say(f"trained a {kind} tokenizer in {report['seconds']} s -> {path}")
    say_fields({"vocabulary size": f"{report['vocab_size']:,}",
                "characters": f"{report['n_chars']:,}",
                "tokens": f"{report['n_tokens']:,}",
                "chars per token": f"{report['chars_per_token']:.3f}"})
    return report


def check_tokenizer_out(out: str, files: list[str], overwrite: bool) -> None:
    """Refuse ``out`` inside a model directory (one with a config.json), equal to an input,
    a directory, or an existing file unless ``overwrite``."""
    model_config = Path(out).parent / "config.json"
    if model_config.is_file():
        raise ConfigError(f"--out {out} is inside a model directory ({model_config} exists): "
                          "a new tokenizer would not match the model's ids; write it elsewhere")
    check_output(out, files, overwrite, kind="file")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="tok_command", required=True, metavar="SUBCOMMAND")
    t = sub.add_parser("train", help="train a tokenizer on text files -> tokenizer.json")
    t.add_argument("files", nargs="+")
    t.add_argument("--kind", default="bpe", choices=["char", "bpe", "wordpiece", "unigram"])
    t.add_argument("--vocab-size", type=int, default=4096)
    t.add_argument("--min-frequency", type=int, default=2)
    t.add_argument("--out", default="tokenizer.json")
    t.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    t.add_argument("--special-tokens", help="comma-separated special tokens (default: the kind's "
                   "own, e.g. <|endoftext|> for bpe)")
    t.add_argument("--seq2seq", action="store_true", help="the special tokens an encoder–"
                   f"decoder needs: {', '.join(SEQ2SEQ_SPECIAL_TOKENS)} (a joint tokenizer: pass "
                   "the source and the target files)")


def special_tokens(listed: str | None, seq2seq: bool = False) -> list[str] | None:
    """The ``--special-tokens`` list (comma-separated), after the encoder–decoder's own with
    ``--seq2seq``; None: the tokenizer kind's default."""
    specials = listed.split(",") if listed else None
    if seq2seq:
        specials = list(dict.fromkeys(SEQ2SEQ_SPECIAL_TOKENS + (specials or [])))
    return specials


def run(args: argparse.Namespace) -> None:
    tokenizer_train(args.files, args.kind, args.vocab_size, args.out, args.min_frequency,
                    special_tokens=special_tokens(args.special_tokens, args.seq2seq),
                    overwrite=args.overwrite)


COMMANDS = [Command("tokenizer", "tokenizer commands", add_arguments, run)]
