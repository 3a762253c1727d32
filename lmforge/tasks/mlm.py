"""Masked-LM + next-sentence pre-training of an encoder (BERT): text -> WordPiece tokenizer ->
sentence pairs -> masked batches -> :class:`~lmforge.models.MaskedLM` -> model directory.

``task = "mlm"``, the default for ``model.arch = "encoder"``; ``[mlm]`` sets the masking. Like :mod:`lmforge.tasks.lm`, it
writes everything to ``cfg.out_dir`` (model directory + run directory) and resumes exactly:
the pairs and the masking of every batch are a pure function of ``(seed, step, micro_step,
rank)``. Documents are held out whole for validation (the last ``data.val_fraction`` of them);
at the end, masked-token accuracy and next-sentence accuracy on them go into meta.json.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data import SentencePairs, SpecialIds, read_documents, split_sentences
from ..errors import ConfigError, DataError
from ..evaluation import mlm_metrics
from ..modeldir.directory import update_meta
from ..objectives import mask_batch, mlm_nsp_loss
from ..tokenizers.special import BERT_SPECIAL_TOKENS
from .config import RunConfig
from .driver import RunState, train_task
from .registry import Task, TaskData, register
from .steps import TrainRun, data_paths, seq_len_of

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


@dataclass
class MLMConfig:
    mask_prob: float = 0.15
    """Share of the tokens chosen for prediction; of those 80% become [MASK], 10% a random
    token and 10% stay (BERT's recipe)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_prob < 1.0:
            raise ConfigError(f"mlm.mask_prob: must be in (0, 1), got {self.mask_prob}")


class MaskedLMTask(Task):
    name = "mlm"
    summary = "pre-train an encoder by masked-LM (+ next-sentence prediction with that head)"
    section, config = "mlm", MLMConfig
    archs = ("encoder",)
    default_arch = "encoder"
    objective = staticmethod(mlm_nsp_loss)

    def check(self, cfg: RunConfig) -> None:
        m = cfg.model
        if m.heads == "none":
            raise ConfigError("model.heads = \"none\" leaves nothing to pre-train; use "
                              "\"mlm+nsp\" or \"mlm\"")
        if m.heads == "mlm" and m.pooler:
            raise ConfigError("model.heads = \"mlm\" with model.pooler = true: nothing would "
                              "train the pooler; set model.pooler = false (or heads = \"mlm+nsp\")")
        if m.type_vocab_size == 1:
            raise ConfigError("model.type_vocab_size = 1 cannot tell segment A from B: use 2 "
                              "(BERT), or 0 for no token types")

    def special_tokens(self, cfg: RunConfig) -> list[str]:
        return list(BERT_SPECIAL_TOKENS)

    def prepare(self, run: RunState) -> TaskData:
        cfg, tc, tokenizer = run.cfg, run.cfg.train, run.tokenizer
        special = SpecialIds.from_tokenizer(tokenizer)
        seq_len, paths = seq_len_of(cfg), data_paths(cfg)
        docs = [d for doc in read_documents(paths, cfg.data.text_field)
                for d in split_sentences(doc.text)]
        train_docs, val_docs = _split_docs(docs, cfg.data.val_fraction)
        train_pairs = _pairs("training", train_docs, tokenizer, seq_len)
        val_pairs = _pairs("validation", val_docs, tokenizer, seq_len) if val_docs else None
        B, seed, vocab, p = tc.batch_size, cfg.seed, run.vocab, cfg.mlm.mask_prob

        def masked(batch: dict, gen: torch.Generator) -> dict:
            if not cfg.model.type_vocab_size:
                batch.pop("token_type_ids")
            return mask_batch(batch, vocab, special.mask, special.never_masked, p, gen)

        val = [] if val_pairs is None else [
            masked(val_pairs.batch(B, seed, i, 0, _VAL_RANK), mask_generator(seed, i, 0, _VAL_RANK))
            for i in range(tc.eval_batches)]
        run.state["val_batches"] = val

        def evaluate(mdl) -> dict:  # every eval logs the accuracies too (metrics.jsonl)
            res = mlm_metrics(mdl, val, next(mdl.parameters()).device)
            return {"loss": res.get("mlm_loss", 0.0) + res.get("nsp_loss", 0.0), **res}

        return TaskData(
            train_batch=lambda step, micro, rank: masked(train_pairs.batch(B, seed, step, micro, rank),
                                                         mask_generator(seed, step, micro, rank)),
            eval_batches=(lambda: val) if val else None, evaluate=evaluate if val else None,
            tokens_per_batch=B * seq_len,
            meta={"paths": [str(p) for p in paths], "train_documents": len(train_pairs.docs),
                  "train_sentences": train_pairs.n_sentences,
                  "val_documents": len(val_pairs.docs) if val_pairs else 0,
                  "val_sentences": val_pairs.n_sentences if val_pairs else 0})

    def meta(self, run: RunState) -> dict:
        nsp = run.cfg.model.heads == "mlm+nsp"
        return {"task": "masked-lm" + ("+nsp" if nsp else ""),
                "objective": {"mask_prob": run.cfg.mlm.mask_prob, "mask/random/keep": [0.8, 0.1, 0.1]}}

    def finish(self, run: RunState, trainer, train_run: TrainRun) -> None:
        """Masked-token and next-sentence accuracy on the held-out documents -> meta.json."""
        val = run.state["val_batches"]
        if val:
            train_run.metrics = mlm_metrics(train_run.model, val, trainer.device)
            update_meta(run.out, eval=train_run.metrics)


register(MaskedLMTask())


def train_mlm(cfg: RunConfig, *, mask_prob: float | None = None, **kw) -> TrainRun:
    """Pre-train ``cfg.model`` (``arch = "encoder"``) with masked-LM (+ NSP when the model has
    that head): :func:`~lmforge.tasks.train_task` with ``task = "mlm"``. Returns the run with
    ``metrics``: mlm_accuracy, mlm_loss, nsp_accuracy, nsp_loss on the held-out documents
    (empty without a validation split)."""
    cfg.task = cfg.task or MaskedLMTask.name
    if mask_prob is not None:
        cfg.mlm = MLMConfig(mask_prob=mask_prob)
    return train_task(cfg, **kw)
