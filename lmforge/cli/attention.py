"""``lmforge attention``: attention pictures of a text (head view, model view, rollout;
cross-attention for encoder–decoders) and a web page with them and the logit lens
(:mod:`lmforge.explain.explorer`)."""

from __future__ import annotations

import argparse
import json

from ..errors import ConfigError
from ..explain.explorer import ablation_grid, explore, explore_seq2seq, load_for_explore
from ..explain.plots import write_attention_pictures
from ..files.guard import check_output, replace_directory
from .arguments import non_empty_str, positive_int
from .output import say
from .registry import Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir")
    p.add_argument("--text", required=True, help="the input (an encoder–decoder's source)")
    p.add_argument("--out", required=True, type=non_empty_str,
                   help="directory for the PNGs, index.html and explore.json")
    p.add_argument("--layer", type=int, default=0, help="layer of the head view (-1 = last)")
    p.add_argument("--head", type=int, default=0, help="head of the head view")
    p.add_argument("--target", help="encoder–decoders: the target text (default: the model's "
                   "own greedy translation)")
    p.add_argument("--top-k", type=positive_int, default=5, help="logit-lens tokens kept")
    p.add_argument("--ablation", action="store_true", help="also switch off each head in turn "
                   "and draw how the loss changes (ablation.png; two forward passes per head)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")


def run(args: argparse.Namespace) -> None:
    out = check_output(args.out, [args.model_dir], args.overwrite, "--out")
    model, tokenizer = load_for_explore(args.model_dir)
    if model.cfg.arch == "seq2seq":
        data = explore_seq2seq(model, tokenizer, args.text, args.target, top_k=args.top_k)
    elif args.target is not None:
        raise ConfigError("--target is for encoder–decoders; this model is a "
                          f"{model.cfg.arch}: leave --target out")
    else:
        data = explore(model, tokenizer, args.text, top_k=args.top_k)
    if args.ablation:
        data["ablation"] = ablation_grid(model, tokenizer, args.text, args.target)

    def write(tmp):
        tmp.mkdir(parents=True)
        (tmp / "explore.json").write_text(json.dumps(data), encoding="utf-8")
        return write_attention_pictures(tmp, data, args.layer, args.head)

    replace_directory(out, write)
    say(f"{data['kind']}: {len(data['tokens'])} tokens, {len(data['attention'])} layers x "
        f"{len(data['attention'][0])} heads -> {out}/index.html (head.png, model_view.png, "
        "rollout.png" + (", cross.png" if data["kind"] == "seq2seq" else "")
        + (", ablation.png" if args.ablation else "") + ", explore.json)")


COMMANDS = [Command("attention", "attention maps, rollout and logit lens of a text",
                    add_arguments, run)]
