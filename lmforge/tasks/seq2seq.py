"""Encoder–decoder translation (``task = "translation"``, the default for ``model.arch =
"seq2seq"``), configured by ``[seq2seq]``; span-corruption pre-training on plain text is
:mod:`lmforge.tasks.span_corruption`, which shares the table.

Translation: read the pairs -> one joint tokenizer (trained on both sides, or
``tokenizer.path``; or a source and a target tokenizer) -> filter empty / over-long /
length-ratio outliers (reported) -> batches of similar length by token count ->
label-smoothed cross-entropy -> at the end, translate the test split with beam search and
score it with BLEU and chrF. Like every task, ``cfg.out_dir`` is at once the model directory
and the run directory.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch.nn.functional as F

from ..data import ParallelCorpus, TokenBatches, collate, filter_pairs, language_files, read_parallel
from ..errors import ConfigError
from ..evaluation.translation import side_by_side, translation_scores
from ..files.atomic import atomic_write_text
from ..inference.translate import DecodeConfig, Seq2SeqTokens, Translator
from ..modeldir import save_model_dir
from ..modeldir.directory import SOURCE_TOKENIZER, update_meta
from ..objectives import seq2seq_objective
from ..tokenizers import load_tokenizer, save_tokenizer, train_tokenizer
from ..tokenizers.special import IGNORE_INDEX, SEQ2SEQ_SPECIAL_TOKENS
from .config import RunConfig
from .driver import RunState, train_task
from .registry import Task, TaskData, register
from .steps import TrainRun, run_tokenizer

SPECIAL_TOKENS = SEQ2SEQ_SPECIAL_TOKENS
"""Padding, decoder start, end of sentence (source and target), unknown."""
TOKEN_NAMES = {"pad": "<pad>", "start": "<s>", "eos": "</s>"}


@dataclass
class Seq2SeqConfig:
    objective: Literal["translation", "span_corruption"] = "translation"
    """translation = learn target from source on a parallel corpus; span_corruption = T5
    pre-training on plain text (``data.path``): spans of the input are replaced by sentinel
    tokens and the decoder writes the spans."""
    data_dir: str = ""
    """A directory of line-aligned files named SPLIT.LANG or SPLIT.LANG.gz (e.g. Multi30k's
    train.en.gz, train.de.gz); used with src_lang/tgt_lang and the *_split fields."""
    src_lang: str = ""
    """Source language code in data_dir file names (e.g. en)."""
    tgt_lang: str = ""
    """Target language code in data_dir file names (e.g. de)."""
    train_split: str = "train"
    valid_split: str = "val"
    """data_dir split used for the validation loss ("" = none)."""
    test_split: str = ""
    """data_dir split translated and scored (BLEU, chrF) at the end ("" = none)."""
    train: str = ""
    """Instead of data_dir: the training source file (line-aligned with ``train_target``), or
    one TSV (source<TAB>target) / JSONL file holding both sides."""
    train_target: str = ""
    valid: str = ""
    valid_target: str = ""
    test: str = ""
    test_target: str = ""
    format: Literal["auto", "lines", "tsv", "jsonl"] = "auto"
    """How train/valid/test files are laid out; auto = by extension."""
    src_field: str = "src"
    """JSONL: the source field (or the source language in {"translation": {...}} records)."""
    tgt_field: str = "tgt"
    separate_tokenizers: bool = False
    """false: one joint tokenizer for both languages (and one embedding table); true: a
    source tokenizer (source_tokenizer.json) and a target one (tokenizer.json), each trained
    on its side with tokenizer.kind / vocab_size, and separate embedding tables."""
    source_tokenizer: str = ""
    """With separate_tokenizers: an existing source tokenizer.json to use instead of training
    one (tokenizer.path is then the target's)."""
    max_len: int = 128
    """Tokens per side; longer pairs are dropped from training (and counted)."""
    max_ratio: float = 3.0
    """Drop training pairs whose longer side has more than this many times the tokens of the
    shorter side (alignment errors); 0 = keep all."""
    max_tokens: int = 4096
    """Tokens per batch (padded source or target, whichever is longer, times pairs): pairs of
    similar length are batched together so that little is padding."""
    label_smoothing: float = 0.1
    """Share of each target's probability spread over the vocabulary (0.1 in the paper)."""
    beam_size: int = 4
    """Beam used to translate the test split at the end (1 = greedy)."""
    length_penalty: float = 1.0
    bleu_every_eval: int = 0
    """Also translate this many validation sentences (greedy) at each evaluation and log
    their BLEU; 0 = loss only."""
    noise_density: float = 0.15
    """span_corruption: share of the tokens hidden."""
    mean_span_length: float = 3.0
    """span_corruption: average length of a hidden span."""
    sentinels: int = 100
    """span_corruption: sentinel tokens added to the tokenizer (<extra_id_0> ...)."""

    def __post_init__(self) -> None:
        if self.max_len < 2 or self.max_tokens < self.max_len:
            raise ConfigError(f"seq2seq.max_len must be >= 2 and seq2seq.max_tokens >= max_len, "
                              f"got {self.max_len} and {self.max_tokens}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"seq2seq.label_smoothing: must be in [0, 1), got {self.label_smoothing}")
        if self.beam_size < 1:
            raise ConfigError(f"seq2seq.beam_size: must be at least 1 (1 = greedy), got {self.beam_size}")
        if not 0.0 < self.noise_density < 1.0 or self.mean_span_length < 1:
            raise ConfigError("seq2seq.noise_density must be in (0, 1) and mean_span_length >= 1")
        if self.max_ratio < 0 or self.bleu_every_eval < 0 or self.sentinels < 1:
            raise ConfigError("seq2seq.max_ratio and bleu_every_eval must be >= 0, sentinels >= 1")


def read_split(sc: Seq2SeqConfig, which: str) -> ParallelCorpus | None:
    """The ``train``/``valid``/``test`` pairs the config names (None when it names none)."""
    if sc.data_dir:
        split = {"train": sc.train_split, "valid": sc.valid_split, "test": sc.test_split}[which]
        if not split:
            return None
        if not (sc.src_lang and sc.tgt_lang):
            raise ConfigError("seq2seq.data_dir needs seq2seq.src_lang and seq2seq.tgt_lang, the "
                              "language codes in its file names (e.g. en and de for train.en.gz)")
        return read_parallel(*language_files(sc.data_dir, split, sc.src_lang, sc.tgt_lang))
    source, target = getattr(sc, which), getattr(sc, f"{which}_target")
    if not source:
        if which == "train":
            raise ConfigError("seq2seq: no training pairs; set seq2seq.data_dir with src_lang and "
                              "tgt_lang, or seq2seq.train (+ seq2seq.train_target)")
        return None
    return read_parallel(source, target or None, fmt=sc.format, src_field=sc.src_field,
                         tgt_field=sc.tgt_field)


def _encode(tokenizer, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]


def _tokenizer(cfg: RunConfig, out: Path, resume: bool, texts, specials: list[str]):
    """The run's tokenizer (joint for source and target), trained on ``texts`` unless given."""
    corpus = out / "tokenizer-corpus.txt"
    if not (cfg.tokenizer.path or (resume and (out / "tokenizer.json").is_file())):
        corpus.write_text("\n".join(texts()) + "\n", encoding="utf-8")
    try:
        tok = run_tokenizer(cfg, out, resume, [str(corpus)], special_tokens=specials)
    finally:
        corpus.unlink(missing_ok=True)
    Seq2SeqTokens.from_tokenizer(tok)  # refuses a tokenizer without <pad>, <s>, </s>
    return tok


def _source_tokenizer(cfg: RunConfig, out: Path, resume: bool, texts: list[str]):
    """With separate tokenizers: the source side's, trained on the source sentences (with the
    target's kind and size) unless ``seq2seq.source_tokenizer`` names one; saved in ``out``."""
    saved = out / SOURCE_TOKENIZER
    if resume and saved.is_file():
        tok = load_tokenizer(saved)
    elif cfg.seq2seq.source_tokenizer:
        tok = load_tokenizer(cfg.seq2seq.source_tokenizer)
    else:
        corpus = out / "source-tokenizer-corpus.txt"
        corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
        try:
            tok = train_tokenizer([corpus], kind=cfg.tokenizer.kind,
                                  vocab_size=cfg.tokenizer.vocab_size, special_tokens=SPECIAL_TOKENS)
        finally:
            corpus.unlink(missing_ok=True)
    Seq2SeqTokens.from_tokenizer(tok)  # the same special tokens as the target side
    save_tokenizer(tok, saved)
    return tok


def _nll(model, batches: list[dict]) -> float:
    """Mean per-token negative log-likelihood (no label smoothing) over ``batches``."""
    device = next(model.parameters()).device
    total, n = 0.0, 0
    for b in batches:
        b = {k: v.to(device) for k, v in b.items()}
        logits = model(b["src"], b["tgt_in"], b["src_mask"])
        total += float(F.cross_entropy(logits.flatten(0, 1).float(), b["tgt_out"].flatten(),
                                       ignore_index=IGNORE_INDEX, reduction="sum"))
        n += int((b["tgt_out"] != IGNORE_INDEX).sum())
    return total / max(n, 1)


class Seq2SeqTask(Task):
    """What the encoder–decoder tasks share: the ``[seq2seq]`` table, the label-smoothed
    objective, the special tokens in meta.json; ``seq2seq.objective`` picks among them."""

    section, config = "seq2seq", Seq2SeqConfig
    archs = ("seq2seq",)
    default_arch = "seq2seq"

    def claims(self, cfg: RunConfig) -> bool:
        return cfg.seq2seq.objective == self.name.replace("-", "_")

    def make_objective(self, run: RunState):
        return seq2seq_objective(run.cfg.seq2seq.label_smoothing)

    def meta(self, run: RunState) -> dict:
        return {"seq2seq_tokens": TOKEN_NAMES}


class TranslationTask(Seq2SeqTask):
    name = "translation"
    summary = "train an encoder–decoder on a parallel corpus; BLEU/chrF on the test split"

    def check(self, cfg: RunConfig) -> None:
        sc = cfg.seq2seq
        if cfg.model.context_length < sc.max_len + 1:
            raise ConfigError(f"model.context_length ({cfg.model.context_length}) must be at "
                              f"least seq2seq.max_len + 1 ({sc.max_len + 1}: the end token is added)")
        if sc.separate_tokenizers:  # two vocabularies cannot share one embedding table
            cfg.model = dataclasses.replace(cfg.model, share_embeddings=False)

    def tokenizer(self, run: RunState):
        """Joint (trained on both sides) or, with separate_tokenizers, the target side's; the
        source side's goes to ``run.state["src_tok"]``."""
        cfg, sc = run.cfg, run.cfg.seq2seq
        train = run.state["train"] = read_split(sc, "train")
        run.state["valid"], run.state["test"] = read_split(sc, "valid"), read_split(sc, "test")
        if sc.separate_tokenizers:
            tok = _tokenizer(cfg, run.out, run.resume, lambda: train.tgt, SPECIAL_TOKENS)
            run.state["src_tok"] = _source_tokenizer(cfg, run.out, run.resume, train.src)
        else:
            tok = _tokenizer(cfg, run.out, run.resume, lambda: train.src + train.tgt, SPECIAL_TOKENS)
            run.state["src_tok"] = tok
        return tok

    def fit_vocab(self, run: RunState) -> int:
        vocab = super().fit_vocab(run)
        if run.cfg.seq2seq.separate_tokenizers:
            n = run.state["src_tok"].get_vocab_size(with_added_tokens=True)
            run.cfg.model = dataclasses.replace(run.cfg.model, src_vocab_size=n)
        return vocab

    def prepare(self, run: RunState) -> TaskData:
        sc, tc, tokenizer, src_tok = run.cfg.seq2seq, run.cfg.train, run.tokenizer, run.state["src_tok"]
        train, valid = run.state["train"], run.state["valid"]
        tokens = Seq2SeqTokens.from_tokenizer(tokenizer)
        src_ids, tgt_ids = _encode(src_tok, train.src), _encode(tokenizer, train.tgt)
        kept, report = filter_pairs(src_ids, tgt_ids, train.where, max_len=sc.max_len,
                                    max_ratio=sc.max_ratio)
        src_ids, tgt_ids = [src_ids[i] for i in kept], [tgt_ids[i] for i in kept]
        batches = TokenBatches([len(x) + 1 for x in src_ids], [len(y) + 1 for y in tgt_ids],
                               sc.max_tokens, run.cfg.seed)
        pair = lambda s, t: collate(s, t, pad_id=tokens.pad, bos_id=tokens.start,  # noqa: E731
                                    eos_id=tokens.eos)
        val_batches = _valid_batches(run, valid, src_tok, tokenizer, pair)
        run.state.update(report=report, padding=batches.padding_fraction())
        print(f"seq2seq data: {report}; {len(batches)} batches per epoch, "
              f"{batches.padding_fraction():.1%} padding", flush=True)

        def train_batch(step: int, micro: int, rank: int) -> dict:
            idx = batches.batch((step * tc.grad_accum + micro) * run.world_size + rank)
            return pair([src_ids[i] for i in idx], [tgt_ids[i] for i in idx])

        def evaluate(m) -> dict:
            metrics = {"loss": _nll(m, val_batches)}
            if sc.bleu_every_eval and valid is not None:
                n = sc.bleu_every_eval
                hyps = _translator(run, m).translate(valid.src[:n], DecodeConfig(beam_size=1))
                metrics["bleu"] = translation_scores(hyps, valid.tgt[:n]).bleu
            return metrics

        return TaskData(
            train_batch=train_batch, evaluate=evaluate if val_batches else None,
            tokens_per_batch=sum(batches.tokens(i) for i in range(len(batches))) // len(batches),
            meta={"train_pairs": len(train), "kept_pairs": len(kept), "filter": str(report),
                  "batches_per_epoch": len(batches),
                  "padding_fraction": round(batches.padding_fraction(), 4),
                  "valid_pairs": len(valid) if valid is not None else 0,
                  "languages": [sc.src_lang, sc.tgt_lang] if sc.data_dir else None})

    def save(self, run: RunState, model, meta) -> None:
        save_model_dir(run.out, model, run.tokenizer, meta)
        if run.state["src_tok"] is not run.tokenizer:
            atomic_write_text(run.out / SOURCE_TOKENIZER, run.state["src_tok"].to_str(pretty=True))

    def finish(self, run: RunState, trainer, train_run: TrainRun) -> None:
        train_run.metrics["padding_fraction"] = round(run.state["padding"], 4)
        train_run.report = f"  data: {run.state['report']}"
        if run.state["test"] is not None:
            _score_test(train_run, _translator(run, train_run.model.eval()), run.state["test"],
                        run.cfg.seq2seq)


register(TranslationTask())


def _valid_batches(run: RunState, valid: ParallelCorpus | None, src_tok, tokenizer, pair) -> list[dict]:
    """The validation pairs (only empty ones dropped), batched by token count in file order."""
    if valid is None:
        return []
    sc = run.cfg.seq2seq
    vs, vt = _encode(src_tok, valid.src), _encode(tokenizer, valid.tgt)
    vkeep, _ = filter_pairs(vs, vt, valid.where, max_len=run.cfg.model.context_length - 1,
                            max_ratio=0)
    vs, vt = [vs[i] for i in vkeep], [vt[i] for i in vkeep]
    vb = TokenBatches([len(x) + 1 for x in vs], [len(y) + 1 for y in vt], sc.max_tokens,
                      run.cfg.seed, shuffle=False)
    return [pair([vs[i] for i in vb.batch(j)], [vt[i] for i in vb.batch(j)]) for j in range(len(vb))]


def _translator(run: RunState, model) -> Translator:
    return Translator(model, run.tokenizer, {"seq2seq_tokens": TOKEN_NAMES},
                      src_tokenizer=run.state["src_tok"])


def train_seq2seq(cfg: RunConfig, **kw) -> TrainRun:
    """Train an encoder–decoder: translation, or span corruption when ``seq2seq.objective``
    (or ``task``) says so — :func:`~lmforge.tasks.train_task` for ``model.arch = "seq2seq"``."""
    if cfg.model.arch != "seq2seq":
        raise ConfigError(f"train_seq2seq trains encoder–decoders (model.arch = \"seq2seq\"), "
                          f"got {cfg.model.arch!r}")
    return train_task(cfg, **kw)


def _score_test(run: TrainRun, translator: Translator, test: ParallelCorpus,
                sc: Seq2SeqConfig) -> None:
    """Translate the test split with the configured beam; BLEU/chrF into metrics and meta."""
    t0 = time.perf_counter()
    hyps = translator.translate(test.src, DecodeConfig(beam_size=sc.beam_size,
                                                       length_penalty=sc.length_penalty))
    scores = translation_scores(hyps, test.tgt)
    seconds = time.perf_counter() - t0
    run.metrics.update(test_bleu=round(scores.bleu, 2), test_chrf=round(scores.chrf, 2),
                       test_sentences=scores.n)
    run.report += (f"\n  test: BLEU {scores.bleu:.2f}, chrF {scores.chrf:.2f} on {scores.n} "
                   f"sentences (beam {sc.beam_size}, {seconds:.0f} s)  [{scores.signature}]\n"
                   + side_by_side(test.src, hyps, test.tgt, n=3))
    update_meta(run.out_dir, test={"bleu": scores.bleu, "chrf": scores.chrf, "n": scores.n,
                                   "beam_size": sc.beam_size, "signature": scores.signature})




__all__ = ["SPECIAL_TOKENS", "Seq2SeqConfig", "TOKEN_NAMES", "read_split", "train_seq2seq"]
