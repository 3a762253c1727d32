"""Argument groups more than one command declares (so they read and default the same)."""

from __future__ import annotations

import argparse


def labeled_data_arguments(p: argparse.ArgumentParser) -> None:
    """How to read a file of texts (and labels): ``classify`` and ``embed``."""
    p.add_argument("--format", default="auto",
                   choices=["auto", "csv", "tsv", "jsonl", "text", "label-text"],
                   help="auto = by extension: .csv .tsv .jsonl, .txt (one text a line), "
                        "anything else 'label text' lines (SST)")
    p.add_argument("--text-column", default="text")
    p.add_argument("--text-pair-column", help="second text column (sentence pairs)")
    p.add_argument("--label-column", default="label")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the results to this JSON file")


def labeled_data_options(args: argparse.Namespace) -> dict:
    """The keyword arguments :func:`labeled_data_arguments` declared, as the functions behind
    ``classify`` and ``embed`` name them (the pair column aside)."""
    return dict(fmt=args.format, text_column=args.text_column, label_column=args.label_column,
                batch_size=args.batch_size, device=args.device)
