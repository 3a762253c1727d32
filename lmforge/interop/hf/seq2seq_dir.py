"""Importing a whole Hugging Face encoder–decoder directory (T5, BART): config, weights and
tokenizer.json in, an lmforge model directory out, with meta.json's ``seq2seq_tokens`` (the
decoder's start token, the end and padding tokens) taken from config.json's ids."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ...modeldir.directory import check_vocab, write_model_dir
from ...modeldir.meta import ModelMeta, Seq2SeqTokenNames, Source
from ...models import ModelConfig
from .base import Family, converted_tensors, dtype_name
from .files import read_hf_config, read_hf_tokenizer, read_hf_weights, special_tokens
from .marian import seq2seq_token_names

Fit = Callable[[dict[str, torch.Tensor], ModelConfig, dict], ModelConfig]
"""(checkpoint tensors, config from config.json, config.json) -> the config for what the
checkpoint holds (e.g. whether the output matrix is tied); may drop copies of tied tensors."""


def import_seq2seq_dir(src: Path, out: Path, dtype: str | None, family: Family,
                       fit: Fit) -> Path:
    """Convert the directory ``src`` with ``family``; refuse a checkpoint with tensors the
    family does not model (a CheckpointError naming them)."""
    src = Path(src)
    where = str(src)
    hf = read_hf_config(src)
    cfg = family.config_from_hf(hf)  # refuse an unsupported option before reading the weights
    tokenizer = read_hf_tokenizer(src)
    check_vocab(tokenizer, cfg, str(src / "tokenizer.json"))
    start = hf.get("decoder_start_token_id")  # T5 starts from <pad> (and may not say so)
    ids = dict(hf, decoder_start_token_id=hf.get("pad_token_id") if start is None else start)
    tokens = seq2seq_token_names(tokenizer, ids, str(src / "config.json"))
    weights = dict(read_hf_weights(src))
    cfg = fit(weights, cfg, hf)
    tensors = converted_tensors(family, weights, cfg, where, dtype)
    source = Source(kind="imported", format="huggingface", path=str(src.resolve()),
                    special_tokens=special_tokens(src), family=family.name,
                    model_type=hf.get("model_type"), dtype=dtype_name(tensors), config=hf)
    meta = ModelMeta(task="import", source=source, seq2seq_tokens=Seq2SeqTokenNames(**tokens),
                     parameters=sum(t.numel() for t in tensors.values()))
    return write_model_dir(out, cfg, tensors, tokenizer, meta)


def untied_head(weights: dict[str, torch.Tensor], shared: str) -> bool:
    """Whether the checkpoint's output matrix ``lm_head.weight`` is a table of its own (not
    absent, not a copy of the token table ``shared``); a copy is dropped from ``weights``."""
    head = weights.get("lm_head.weight")
    if head is None:
        return False
    table = weights.get(shared)
    if table is not None and (head is table or torch.equal(head, table)):
        del weights["lm_head.weight"]
        return False
    return True
