"""`lmforge` command line: parses arguments and calls the plain functions in
``lmforge.cli.commands``. Errors meant for a person are printed as one line, exit code 2."""

from __future__ import annotations

import argparse
import sys

from ..errors import ConfigError, LMForgeError
from .chat import add_chat_parser, run_chat
from .encoder_commands import ENCODER_COMMANDS, add_encoder_parsers, run_encoder_command
from .translate_commands import add_translate_parser, run_translate


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lmforge", description="Build, train, evaluate, inspect and use transformer models "
        "on your own machine. `lmforge quickstart` trains a small GPT in a few minutes.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    q = sub.add_parser("quickstart", help="train a small GPT on real text, evaluate, sample (minutes)")
    q.add_argument("--data", help="your own text (file, directory or JSONL) instead of the default")
    q.add_argument("--out", default="runs/quickstart", help="model directory to write")
    q.add_argument("--steps", type=int, help="optimiser steps (default 1000)")
    q.add_argument("--prompt", help="prompt for the samples")
    q.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    t = sub.add_parser("tokenizer", help="tokenizer commands")
    tsub = t.add_subparsers(dest="tok_command", required=True, metavar="SUBCOMMAND")
    tt = tsub.add_parser("train", help="train a tokenizer on text files -> tokenizer.json")
    tt.add_argument("files", nargs="+")
    tt.add_argument("--kind", default="bpe", choices=["char", "bpe", "wordpiece", "unigram"])
    tt.add_argument("--vocab-size", type=int, default=4096)
    tt.add_argument("--min-frequency", type=int, default=2)
    tt.add_argument("--out", default="tokenizer.json")
    tt.add_argument("--special-tokens", help="comma-separated special tokens (default: the kind's "
                    "own, e.g. <|endoftext|> for bpe)")
    tt.add_argument("--seq2seq", action="store_true", help="the special tokens an encoder–"
                    "decoder needs: <pad>, <s>, </s>, <unk> (a joint tokenizer: pass the source "
                    "and the target files)")

    tr = sub.add_parser("train", help="train a model from a TOML config")
    tr.add_argument("config", nargs="?", help="CONFIG.toml (see docs/config.md)")
    tr.add_argument("--preset", help="start from a preset: tiny, shakespeare-char, gpt2-small")
    tr.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config field, e.g. --set train.lr=3e-4 (repeatable)")
    tr.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    tr.add_argument("--overwrite", action="store_true", help="discard an earlier run's checkpoints")

    g = sub.add_parser("generate", help="generate text from a model directory")
    g.add_argument("model_dir")
    g.add_argument("--prompt", required=True)
    g.add_argument("--max-new-tokens", type=int, default=200)
    g.add_argument("--temperature", type=float, default=0.8)
    g.add_argument("--greedy", action="store_true", help="same as --temperature 0")
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--seed", type=int)
    g.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    g.add_argument("--num-samples", type=int, default=1)
    g.add_argument("--device", default="cpu")
    g.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    g.add_argument("--adapter", help="a LoRA adapter directory to merge into the model first")
    g.add_argument("--chat", action="store_true",
                   help="answer the prompt as a user message, through the model's chat template")

    e = sub.add_parser("eval", help="perplexity and bits per character/byte on held-out text; "
                       "BLEU and chrF for an encoder–decoder")
    e.add_argument("model_dir")
    e.add_argument("--data", required=True, nargs="+", help="text (language models); source "
                   "sentences, or a TSV/JSONL of pairs (encoder–decoders)")
    e.add_argument("--ref", help="encoder–decoder: reference translations, line-aligned with --data")
    e.add_argument("--beam", type=int, default=4, help="encoder–decoder: beam size (1 = greedy)")
    e.add_argument("--length-penalty", type=float, default=1.0)
    e.add_argument("--limit", type=int, default=0, help="encoder–decoder: first N sentences only")
    e.add_argument("--samples", type=int, default=5,
                   help="encoder–decoder: translations to show next to their references")
    e.add_argument("--stride", type=int, help="sliding-window stride (default: half the context)")
    e.add_argument("--batch-size", type=int, help="default 8 (language models), 64 (translation)")
    e.add_argument("--max-chars", type=int, default=0, help="evaluate only the first N characters")
    e.add_argument("--device", default="cpu")
    e.add_argument("--json", help="also write the figures to this JSON file")
    e.add_argument("--baseline", metavar="BASE_DIR", help="also score the model before "
                   "fine-tuning and print both perplexities and the change (forgetting)")

    i = sub.add_parser("info", help="architecture, parameters, tokenizer, provenance")
    i.add_argument("model_dir")
    i.add_argument("--json", help="also write the report to this JSON file")

    im = sub.add_parser("import", help="convert a Hugging Face model directory (GPT-2, Llama, "
                        "Mistral, Qwen2, BERT) or a GGUF file into an lmforge model directory")
    im.add_argument("src", help="Hugging Face model directory, or a .gguf file (llama, qwen2)")
    im.add_argument("--out", required=True, help="model directory to write")
    im.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                    help="cast the weights (default: keep the checkpoint's)")

    ex = sub.add_parser("export", help="write a model directory in another format")
    ex.add_argument("model_dir")
    ex.add_argument("--format", default="hf", choices=["hf"],
                    help="hf = Hugging Face transformers (GPT2LMHeadModel / LlamaForCausalLM)")
    ex.add_argument("--out", required=True, help="directory to write")

    av = sub.add_parser("average", help="average the weights of model directories (checkpoint "
                        "averaging, model soups) into a new one")
    av.add_argument("model_dirs", nargs="+", help="two or more model directories of one architecture")
    av.add_argument("--out", required=True, help="model directory to write")
    av.add_argument("--weights", type=float, nargs="+", help="one weight per directory (default equal)")

    add_encoder_parsers(sub)  # classify, embed
    add_translate_parser(sub)
    add_chat_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from . import commands as c

    try:
        if args.command == "quickstart":
            from ..tasks.quickstart import quickstart

            quickstart(data=args.data, out_dir=args.out, steps=args.steps, prompt=args.prompt,
                       overrides=args.overrides)
        elif args.command == "tokenizer":
            specials = args.special_tokens.split(",") if args.special_tokens else None
            if args.seq2seq:
                from ..tasks.seq2seq import SPECIAL_TOKENS

                specials = list(dict.fromkeys(SPECIAL_TOKENS + (specials or [])))
            c.tokenizer_train(args.files, args.kind, args.vocab_size, args.out, args.min_frequency,
                              special_tokens=specials)
        elif args.command == "train":
            c.train(args.config, args.overrides, args.preset, args.resume, args.overwrite)
        elif args.command == "generate":
            c.generate(args.model_dir, args.prompt, args.max_new_tokens,
                       0.0 if args.greedy else args.temperature, args.top_k, args.top_p,
                       args.seed, args.stop, args.num_samples, args.device, args.dtype,
                       chat=args.chat, adapter=args.adapter)
        elif args.command == "eval" and c.model_arch(args.model_dir) == "seq2seq":
            from ..inference.translate import DecodeConfig
            from .translate_commands import evaluate_translation

            if len(args.data) != 1:
                raise ConfigError("an encoder–decoder is evaluated on one --data file (sources, "
                                  "with --ref, or a TSV/JSONL of pairs)")
            decode = DecodeConfig(beam_size=args.beam, length_penalty=args.length_penalty)
            c.dump_json(evaluate_translation(args.model_dir, args.data[0], args.ref, decode,
                                             args.batch_size or 64, args.device, args.limit,
                                             args.samples), args.json)
        elif args.command == "eval":
            c.dump_json(c.evaluate(args.model_dir, args.data, args.stride, args.batch_size or 8,
                                   args.device, max_chars=args.max_chars,
                                   baseline=args.baseline), args.json)
        elif args.command == "info":
            c.dump_json(c.info(args.model_dir), args.json)
        elif args.command == "import":
            c.import_model(args.src, args.out, args.dtype)
        elif args.command == "export":
            c.export_model(args.model_dir, args.format, args.out)
        elif args.command == "average":
            c.average(args.model_dirs, args.out, args.weights)
        elif args.command == "translate":
            run_translate(args)
        elif args.command == "chat":
            run_chat(args)
        elif args.command in ENCODER_COMMANDS:
            run_encoder_command(args)
    except LMForgeError as err:
        print(f"lmforge {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lmforge {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
