"""Encoder–decoder training (``model.arch = "seq2seq"``): translation on a parallel corpus, or
T5-style span-corruption pre-training on plain text, both configured by ``[seq2seq]``.

Translation: read the pairs -> one joint tokenizer (trained on both sides, or
``tokenizer.path``) -> filter empty / over-long / length-ratio outliers (reported) -> batches of
similar length by token count -> label-smoothed cross-entropy -> at the end, translate the test
split with beam search and score it with BLEU and chrF. Like every task, ``cfg.out_dir`` is
at once the model directory and the run directory.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import to_dict
from ..data import (ParallelCorpus, TokenBatches, build_token_splits, collate, filter_pairs,
                    language_files, read_parallel)
from ..data.batches import batch_offsets
from ..errors import ConfigError, DataError
from ..evaluation.translation import side_by_side, translation_scores
from ..inference.translate import DecodeConfig, Seq2SeqTokens, Translator
from ..io import save_model_dir
from ..io.atomic import atomic_write_text
from ..io.model_dir import SOURCE_TOKENIZER, update_meta
from ..models import build_model
from ..objectives import seq2seq_objective
from ..objectives.span_corruption import corrupt, sentinel_tokens
from ..tokenizers import load_tokenizer, save_tokenizer, train_tokenizer
from ..training import RunConfig, Trainer
from ..training.seq2seq_config import Seq2SeqConfig
from .common import TrainRun, finish, fit_vocab, machine, prepare_out_dir, run_tokenizer, write_run_file

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]
"""Padding, decoder start, end of sentence (source and target), unknown."""
TOKEN_NAMES = {"pad": "<pad>", "start": "<s>", "eos": "</s>"}


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


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _nll(model, batches: list[dict]) -> float:
    """Mean per-token negative log-likelihood (no label smoothing) over ``batches``."""
    device = next(model.parameters()).device
    total, n = 0.0, 0
    for b in batches:
        b = {k: v.to(device) for k, v in b.items()}
        logits = model(b["src"], b["tgt_in"], b["src_mask"])
        total += float(F.cross_entropy(logits.flatten(0, 1).float(), b["tgt_out"].flatten(),
                                       ignore_index=-100, reduction="sum"))
        n += int((b["tgt_out"] != -100).sum())
    return total / max(n, 1)


def train_seq2seq(cfg: RunConfig, *, resume: bool = False, overwrite: bool = False,
                  stop_at: int | None = None) -> TrainRun:
    if cfg.model.arch != "seq2seq":
        raise ConfigError(f"train_seq2seq trains encoder–decoders (model.arch = \"seq2seq\"), got "
                          f"{cfg.model.arch!r}")
    if cfg.seq2seq.objective == "span_corruption":
        return _train_span_corruption(cfg, resume, overwrite, stop_at)
    sc = cfg.seq2seq
    if cfg.model.context_length < sc.max_len + 1:
        raise ConfigError(f"model.context_length ({cfg.model.context_length}) must be at least "
                          f"seq2seq.max_len + 1 ({sc.max_len + 1}: the end token is added)")
    if sc.separate_tokenizers:  # two vocabularies cannot share one embedding table
        cfg.model = dataclasses.replace(cfg.model, share_embeddings=False)
    out = prepare_out_dir(cfg, resume, overwrite)
    train = read_split(sc, "train")
    valid, test = read_split(sc, "valid"), read_split(sc, "test")
    if sc.separate_tokenizers:
        tokenizer = _tokenizer(cfg, out, resume, lambda: train.tgt, SPECIAL_TOKENS)
        src_tok = _source_tokenizer(cfg, out, resume, train.src)
    else:
        tokenizer = _tokenizer(cfg, out, resume, lambda: train.src + train.tgt, SPECIAL_TOKENS)
        src_tok = tokenizer
    vocab = fit_vocab(cfg, tokenizer)
    if sc.separate_tokenizers:
        cfg.model = dataclasses.replace(
            cfg.model, src_vocab_size=src_tok.get_vocab_size(with_added_tokens=True))
    tokens = Seq2SeqTokens.from_tokenizer(tokenizer)

    src_ids, tgt_ids = _encode(src_tok, train.src), _encode(tokenizer, train.tgt)
    kept, report = filter_pairs(src_ids, tgt_ids, train.where, max_len=sc.max_len,
                                max_ratio=sc.max_ratio)
    src_ids, tgt_ids = [src_ids[i] for i in kept], [tgt_ids[i] for i in kept]
    batches = TokenBatches([len(x) + 1 for x in src_ids], [len(y) + 1 for y in tgt_ids],
                           sc.max_tokens, cfg.seed)
    val_batches: list[dict] = []
    if valid is not None:
        vs, vt = _encode(src_tok, valid.src), _encode(tokenizer, valid.tgt)
        vkeep, _ = filter_pairs(vs, vt, valid.where, max_len=cfg.model.context_length - 1,
                                max_ratio=0)
        vs, vt = [vs[i] for i in vkeep], [vt[i] for i in vkeep]
        vb = TokenBatches([len(x) + 1 for x in vs], [len(y) + 1 for y in vt], sc.max_tokens,
                          cfg.seed, shuffle=False)
        val_batches = [collate([vs[i] for i in vb.batch(j)], [vt[i] for i in vb.batch(j)],
                               pad_id=tokens.pad, bos_id=tokens.start, eos_id=tokens.eos)
                       for j in range(len(vb))]
    write_run_file(cfg, out)

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model)
    tc, world = cfg.train, _world_size()
    data_meta = {"train_pairs": len(train), "kept_pairs": len(kept), "filter": str(report),
                 "batches_per_epoch": len(batches),
                 "padding_fraction": round(batches.padding_fraction(), 4),
                 "valid_pairs": len(valid) if valid is not None else 0,
                 "languages": [sc.src_lang, sc.tgt_lang] if sc.data_dir else None}
    meta_base = {"task": "translation", "seq2seq_tokens": TOKEN_NAMES, "data": data_meta,
                 "tokenizer": {"kind": "file" if cfg.tokenizer.path else cfg.tokenizer.kind,
                               "vocab_size": vocab},
                 "parameters": model.num_params(), "run_config": to_dict(cfg), "machine": machine()}
    print(f"seq2seq data: {report}; {len(batches)} batches per epoch, "
          f"{batches.padding_fraction():.1%} padding", flush=True)

    def train_batch(step: int, micro: int, rank: int) -> dict:
        idx = batches.batch((step * tc.grad_accum + micro) * world + rank)
        return collate([src_ids[i] for i in idx], [tgt_ids[i] for i in idx], pad_id=tokens.pad,
                       bos_id=tokens.start, eos_id=tokens.eos)

    translator_of = lambda m: Translator(m, tokenizer, {"seq2seq_tokens": TOKEN_NAMES},  # noqa: E731
                                         src_tokenizer=src_tok)

    def evaluate(m) -> dict:
        metrics = {"loss": _nll(m, val_batches)}
        if sc.bleu_every_eval and valid is not None:
            n = sc.bleu_every_eval
            hyps = translator_of(m).translate(valid.src[:n], DecodeConfig(beam_size=1))
            metrics["bleu"] = translation_scores(hyps, valid.tgt[:n]).bleu
        return metrics

    def on_save(m, summary: dict) -> None:
        save_model_dir(out, m, tokenizer, {**meta_base, "training": summary})
        if src_tok is not tokenizer:
            atomic_write_text(out / SOURCE_TOKENIZER, src_tok.to_str(pretty=True))

    trainer = Trainer(model, seq2seq_objective(sc.label_smoothing), train_batch=train_batch,
                      cfg=tc, out_dir=out, on_save=on_save,
                      evaluate_fn=evaluate if val_batches else None,
                      tokens_per_batch=sum(batches.tokens(i) for i in range(len(batches))) // len(batches))
    t0 = time.time()
    result = trainer.fit(resume=resume, stop_at=stop_at)
    plot = finish(trainer, result, out, t0)
    run = TrainRun(out, result, cfg, tokenizer, model, plot)
    run.metrics["padding_fraction"] = round(batches.padding_fraction(), 4)
    run.report = f"  data: {report}"
    if test is not None and trainer.dist.is_main and result.step == tc.max_steps:
        _score_test(run, translator_of(model.eval()), test, sc)
    return run


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


# -- span corruption ---------------------------------------------------------------------------

def _span_batch(stream: np.ndarray, sentinel_ids: list[int], tokens: Seq2SeqTokens,
                sc: Seq2SeqConfig, B: int, seed: int, step: int, micro: int, rank: int) -> dict:
    """B windows of max_len - 1 tokens, each corrupted with its own seeded spans."""
    L = sc.max_len - 1
    offsets = batch_offsets(len(stream), B, L, seed, step, micro, rank)  # (B,)
    rng = np.random.default_rng([seed, step, micro, rank, 0x5CA7])
    pairs = [corrupt(stream[o:o + L].tolist(), sentinel_ids, rng, sc.noise_density,
                     sc.mean_span_length) for o in offsets.tolist()]
    return collate([p[0] for p in pairs], [p[1] for p in pairs], pad_id=tokens.pad,
                   bos_id=tokens.start, eos_id=tokens.eos)


def _train_span_corruption(cfg: RunConfig, resume: bool, overwrite: bool,
                           stop_at: int | None) -> TrainRun:
    from .common import data_paths

    sc, tc = cfg.seq2seq, cfg.train
    if cfg.model.context_length < sc.max_len + 1:
        raise ConfigError(f"model.context_length ({cfg.model.context_length}) must be at least "
                          f"seq2seq.max_len + 1 ({sc.max_len + 1})")
    out = prepare_out_dir(cfg, resume, overwrite)
    paths = data_paths(cfg)
    sentinels = sentinel_tokens(sc.sentinels)
    tokenizer = run_tokenizer(cfg, out, resume, paths, special_tokens=SPECIAL_TOKENS + sentinels)
    tokens = Seq2SeqTokens.from_tokenizer(tokenizer)
    missing = [s for s in sentinels if tokenizer.token_to_id(s) is None]
    if missing:
        raise ConfigError(f"the tokenizer has no sentinel tokens {missing[0]} ...; span corruption "
                          "needs <extra_id_0> ... <extra_id_N>: train the tokenizer in this run "
                          "(leave tokenizer.path empty)")
    sentinel_ids = [tokenizer.token_to_id(s) for s in sentinels]
    vocab = fit_vocab(cfg, tokenizer)
    splits = build_token_splits(paths, tokenizer, cfg.data.cache_dir or str(out / "data-cache"),
                                val_fraction=cfg.data.val_fraction, text_field=cfg.data.text_field,
                                eos_id=tokens.eos)
    for name, arr in (("training", splits.train), ("validation", splits.val)):
        if len(arr) < sc.max_len + 1 and (name == "training" or cfg.data.val_fraction > 0):
            raise DataError(f"the {name} split of {', '.join(map(str, paths))} has {len(arr)} "
                            f"tokens, fewer than one window of {sc.max_len}; add text or lower "
                            "seq2seq.max_len")
    write_run_file(cfg, out)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model)
    B = tc.batch_size
    batch = lambda arr, *a: _span_batch(arr, sentinel_ids, tokens, sc, B, cfg.seed, *a)  # noqa: E731
    val = [batch(splits.val, 10**6 + i, 0, 0) for i in range(tc.eval_batches)] \
        if cfg.data.val_fraction > 0 else []
    meta = {"task": "span-corruption", "seq2seq_tokens": TOKEN_NAMES,
            "data": {"train_tokens": int(len(splits.train)), "val_tokens": int(len(splits.val))},
            "tokenizer": {"kind": cfg.tokenizer.kind, "vocab_size": vocab},
            "parameters": model.num_params(), "run_config": to_dict(cfg), "machine": machine()}
    trainer = Trainer(model, seq2seq_objective(sc.label_smoothing), cfg=tc, out_dir=out,
                      train_batch=lambda step, micro, rank: batch(splits.train, step, micro, rank),
                      evaluate_fn=(lambda m: {"loss": _nll(m, val)}) if val else None,
                      tokens_per_batch=B * sc.max_len,
                      on_save=lambda m, s: save_model_dir(out, m, tokenizer, {**meta, "training": s}))
    t0 = time.time()
    result = trainer.fit(resume=resume, stop_at=stop_at)
    return TrainRun(out, result, cfg, tokenizer, model, finish(trainer, result, out, t0))


__all__ = ["SPECIAL_TOKENS", "read_split", "train_seq2seq"]
