"""``lmforge explain``: one forward pass walked through with its real numbers
(:mod:`lmforge.explain.walkthrough`), printed compactly and optionally written as a web page."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from ..explain.render import format_html, format_terminal
from ..explain.tiny import TINY_TEXT, tiny_model
from ..explain.walkthrough import walkthrough
from ..files.atomic import atomic_write_text
from ..files.guard import check_output
from ..modeldir import load_model_dir
from .arguments import positive_int
from .output import say
from .registry import Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", nargs="?", help="a model directory (decoder or encoder; an "
                   "encoder–decoder's encoder); leave out with --tiny")
    p.add_argument("--text", help="the input text (--tiny: default 'abca')")
    p.add_argument("--layer", type=int, default=0, help="the block opened up head by head "
                   "(default 0; -1 = the last)")
    p.add_argument("--top-k", type=positive_int, default=5, help="next tokens listed")
    p.add_argument("--out", help="also write every number as a self-contained HTML page here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--tiny", action="store_true", help="a toy decoder (d_model 4, 1 head, "
                   "character vocabulary) small enough to read every number")


def run(args: argparse.Namespace) -> None:
    if args.tiny == bool(args.model_dir):
        raise ConfigError("give a MODEL_DIR or --tiny (one of the two)")
    if args.out:
        check_output(args.out, [args.model_dir], args.overwrite, "--out", kind="file")
    if args.tiny:
        text = TINY_TEXT if args.text is None else args.text
        model, tokenizer = tiny_model(text)
        title = "lmforge explain --tiny"
    else:
        if args.text is None:
            raise ConfigError("--text is required: the text to run through the model")
        text = args.text
        lm = load_model_dir(args.model_dir)
        model, tokenizer, title = lm.model, lm.tokenizer, f"lmforge explain {args.model_dir}"
    walk = walkthrough(model, tokenizer, text, layer=args.layer, top_k=args.top_k)
    say(format_terminal(walk))
    if args.out:
        atomic_write_text(Path(args.out), format_html(walk, title))
        say(f"every number -> {args.out}")


COMMANDS = [Command("explain", "a forward pass walked through with its real numbers",
                    add_arguments, run)]
