"""Masked-LM + next-sentence pre-training of an encoder (BERT): text -> WordPiece tokenizer ->
sentence pairs -> masked batches -> :class:`~lmforge.models.MaskedLM` -> model directory.

`lmforge train` runs this for ``model.arch = "encoder"``. Like :mod:`lmforge.tasks.lm`, it
writes everything to ``cfg.out_dir`` (model directory + run directory) and resumes exactly:
the pairs and the masking of every batch are a pure function of ``(seed, step, micro_step,
rank)``. Documents are held out whole for validation (the last ``data.val_fraction`` of them);
at the end, masked-token accuracy and next-sentence accuracy on them go into meta.json.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ..config import to_dict
from ..data import SentencePairs, SpecialIds, read_documents, split_sentences
from ..errors import ConfigError, DataError
from ..evaluation import mlm_metrics
from ..io import save_model_dir
from ..io.model_dir import update_meta
from ..models import build_model
from ..objectives import mask_batch, mlm_nsp_loss
from ..tokenizers.train import BERT_SPECIAL_TOKENS
from ..training import RunConfig, Trainer
from .common import (TrainRun, data_paths, finish, fit_vocab, machine, prepare_out_dir,
                     run_tokenizer, seq_len_of, write_run_file)

_MASK_STREAM = 0x4D4C4D  # keeps the masking random stream apart from the pair sampling's
_VAL_RANK = 1 << 20  # validation batches use their own (seed, step, rank) stream


def mask_generator(seed: int, step: int, micro_step: int = 0, rank: int = 0) -> torch.Generator:
    """The torch generator that masks batch (seed, step, micro_step, rank)."""
    state = np.random.SeedSequence([seed, step, micro_step, rank, _MASK_STREAM]).generate_state(1)
    return torch.Generator().manual_seed(int(state[0]))


def _split_docs(docs: list[list[str]], val_fraction: float) -> tuple[list, list]:
    """Hold out the last ``val_fraction`` of the documents (at least 2, for random segments)."""
    if val_fraction <= 0:
        return docs, []
    n_val = max(2, round(len(docs) * val_fraction))
    if len(docs) - n_val < 2:
        raise DataError(
            f"the data has {len(docs)} documents (blocks of lines separated by blank lines): too "
            f"few to hold out {n_val} for validation and keep 2 for training; add text, separate "
            "documents with blank lines, or set data.val_fraction = 0")
    return docs[:-n_val], docs[-n_val:]


def _pairs(name: str, docs: list[list[str]], tokenizer, seq_len: int) -> SentencePairs:
    try:
        return SentencePairs.from_documents(docs, tokenizer, seq_len)
    except DataError as e:
        raise DataError(f"the {name} split: {e}") from None


def train_mlm(cfg: RunConfig, *, resume: bool = False, overwrite: bool = False,
              stop_at: int | None = None, mask_prob: float = 0.15) -> TrainRun:
    """Pre-train ``cfg.model`` (``arch = "encoder"``) with masked-LM (+ NSP when the model has
    that head). Returns the run with ``metrics``: mlm_accuracy, mlm_loss, nsp_accuracy, nsp_loss
    on the held-out documents (empty without a validation split)."""
    m = cfg.model
    if m.arch != "encoder":
        raise ConfigError(f"train_mlm trains encoders (model.arch = \"encoder\"), got {m.arch!r}")
    if m.heads == "none":
        raise ConfigError("model.heads = \"none\" leaves nothing to pre-train; use "
                          "\"mlm+nsp\" or \"mlm\"")
    if m.heads == "mlm" and m.pooler:
        raise ConfigError("model.heads = \"mlm\" with model.pooler = true: nothing would train "
                          "the pooler; set model.pooler = false (or heads = \"mlm+nsp\")")
    if m.type_vocab_size == 1:
        raise ConfigError("model.type_vocab_size = 1 cannot tell segment A from B: use 2 "
                          "(BERT), or 0 for no token types")
    out = prepare_out_dir(cfg, resume, overwrite)
    paths = data_paths(cfg)
    tokenizer = run_tokenizer(cfg, out, resume, paths, special_tokens=list(BERT_SPECIAL_TOKENS))
    special = SpecialIds.from_tokenizer(tokenizer)
    vocab = fit_vocab(cfg, tokenizer)
    seq_len = seq_len_of(cfg)
    docs = [d for doc in read_documents(paths, cfg.data.text_field) for d in split_sentences(doc.text)]
    train_docs, val_docs = _split_docs(docs, cfg.data.val_fraction)
    train_pairs = _pairs("training", train_docs, tokenizer, seq_len)
    val_pairs = _pairs("validation", val_docs, tokenizer, seq_len) if val_docs else None
    write_run_file(cfg, out)

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model)
    B, tc = cfg.train.batch_size, cfg.train

    def masked(batch: dict, gen: torch.Generator) -> dict:
        if not cfg.model.type_vocab_size:
            batch.pop("token_type_ids")
        return mask_batch(batch, vocab, special.mask, special.never_masked, mask_prob, gen)

    def train_batch(step: int, micro: int, rank: int) -> dict:
        return masked(train_pairs.batch(B, cfg.seed, step, micro, rank),
                      mask_generator(cfg.seed, step, micro, rank))

    val_batches = [] if val_pairs is None else [
        masked(val_pairs.batch(B, cfg.seed, i, 0, _VAL_RANK), mask_generator(cfg.seed, i, 0, _VAL_RANK))
        for i in range(tc.eval_batches)]
    meta_base = {
        "task": "masked-lm" + ("+nsp" if model.nsp is not None else ""),
        "data": {"paths": [str(p) for p in paths], "train_documents": len(train_pairs.docs),
                 "train_sentences": train_pairs.n_sentences,
                 "val_documents": len(val_pairs.docs) if val_pairs else 0,
                 "val_sentences": val_pairs.n_sentences if val_pairs else 0},
        "tokenizer": {"kind": "file" if cfg.tokenizer.path else cfg.tokenizer.kind,
                      "vocab_size": vocab},
        "objective": {"mask_prob": mask_prob, "mask/random/keep": [0.8, 0.1, 0.1]},
        "parameters": model.num_params(),
        "run_config": to_dict(cfg),
        "machine": machine(),
    }

    def on_save(mdl, summary: dict) -> None:
        save_model_dir(out, mdl, tokenizer, {**meta_base, "training": summary})

    def evaluate(mdl) -> dict:  # every eval logs the accuracies too (metrics.jsonl)
        res = mlm_metrics(mdl, val_batches, next(mdl.parameters()).device)
        return {"loss": res.get("mlm_loss", 0.0) + res.get("nsp_loss", 0.0), **res}

    trainer = Trainer(model, mlm_nsp_loss, train_batch=train_batch,
                      eval_batches=(lambda: val_batches) if val_batches else None,
                      evaluate_fn=evaluate if val_batches else None,
                      cfg=tc, out_dir=out, tokens_per_batch=B * seq_len, on_save=on_save)
    t0 = time.time()
    result = trainer.fit(resume=resume, stop_at=stop_at)
    plot = finish(trainer, result, out, t0)
    metrics = {}
    saved = result.step == tc.max_steps or result.stopped_early  # the model directory is current
    if trainer.dist.is_main and val_batches and saved:
        metrics = mlm_metrics(model, val_batches, trainer.device)
        update_meta(out, eval=metrics)
    return TrainRun(out, result, cfg, tokenizer, model, plot, metrics)
