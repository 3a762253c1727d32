"""Evaluating a model directory, the measure chosen by its architecture.

:func:`evaluate_model_dir` is what ``lmforge eval`` calls: an encoder–decoder
(``arch = "seq2seq"``) is scored by BLEU and chrF of its translations
(:func:`evaluate_translation`), every other model by perplexity and bits per character and
per byte on held-out text (:func:`evaluate_perplexity`, optionally against the model before
fine-tuning). Each returns a plain dict of figures and tells ``say`` a short report.
"""

from __future__ import annotations

import time
from typing import Callable

from ..data import read_documents, read_parallel
from ..errors import ConfigError
from ..evaluation import text_perplexity
from ..evaluation.forgetting import compare_perplexity, format_forgetting, general_perplexity
from ..evaluation.translation import side_by_side, translation_scores
from ..inference.quant import load_for_inference
from ..inference.translate import DecodeConfig, Translator
from ..modeldir import load_model_dir
from ..modeldir.directory import load_source_tokenizer, read_config
from ..tokenizers import eos_token_id

Say = Callable[[str], None]


def _quiet(line: str) -> None:
    pass


def model_arch(model_dir: str) -> str:
    """``arch`` of a model directory's config (decoder, encoder, seq2seq)."""
    return read_config(model_dir).arch


def evaluate_model_dir(model_dir: str, data: str | list[str], *, ref: str | None = None,
                       beam: int = 4, length_penalty: float = 1.0, limit: int = 0,
                       samples: int = 5, stride: int | None = None,
                       batch_size: int | None = None, max_chars: int = 0,
                       baseline: str | None = None, device: str = "cpu",
                       say: Say | None = print) -> dict:
    """Evaluate ``model_dir`` on ``data`` as its architecture calls for.

    An encoder–decoder translates ``data`` (one file: sources with ``ref``, or a TSV/JSONL of
    pairs) with a beam of ``beam`` (``length_penalty``; the first ``limit`` sentences when
    given; ``samples`` translations shown next to their references); ``batch_size`` defaults
    to 64. Any other model: perplexity on the text of ``data`` (files, directories, JSONL; the
    first ``max_chars`` characters when given) in windows moved by ``stride`` (default half
    the context), ``batch_size`` default 8; ``baseline``: also the model before fine-tuning
    and the change. Returns the figures (what ``--json`` writes).
    """
    if model_arch(model_dir) == "seq2seq":
        files = [data] if isinstance(data, str) else list(data)
        if len(files) != 1:
            raise ConfigError("an encoder–decoder is evaluated on one --data file (sources, "
                              "with --ref, or a TSV/JSONL of pairs)")
        decode = DecodeConfig(beam_size=beam, length_penalty=length_penalty)
        return evaluate_translation(model_dir, files[0], ref, decode, batch_size or 64, device,
                                    limit, samples, say=say)
    return evaluate_perplexity(model_dir, data, stride, batch_size or 8, device,
                               max_chars=max_chars, baseline=baseline, say=say)


def evaluate_perplexity(model_dir: str, data: str | list[str], stride: int | None = None,
                        batch_size: int = 8, device: str = "cpu", text_field: str = "text",
                        max_chars: int = 0, baseline: str | None = None,
                        say: Say | None = print) -> dict:
    """Perplexity of ``model_dir`` on ``data``; with ``baseline`` (the model before
    fine-tuning) also the baseline's perplexity and the change (the forgetting report)."""
    say = say or _quiet
    lm = load_for_inference(model_dir, device=device)  # a quantised directory too
    text = "\n\n".join(d.text for d in read_documents(data, text_field=text_field))
    if max_chars:
        text = text[:max_chars]
    t0 = time.perf_counter()
    if baseline:
        return _evaluate_against(lm, load_model_dir(baseline, device=device), text, model_dir,
                                 baseline, data, stride, batch_size, t0, say)
    res = text_perplexity(lm.model, lm.tokenizer, text, stride=stride, batch_size=batch_size,
                          bos_id=eos_token_id(lm.tokenizer))
    out = res.to_dict()
    out["seconds"] = round(time.perf_counter() - t0, 2)
    say(f"evaluated {model_dir} on {data}")
    say(f"  tokens            {res.n_tokens:,} ({res.n_chars:,} characters, {res.n_bytes:,} bytes)")
    say(f"  loss              {res.loss:.4f} nats/token")
    say(f"  perplexity        {res.perplexity:.3f}")
    say(f"  bits per char     {res.bits_per_char:.4f}")
    say(f"  bits per byte     {res.bits_per_byte:.4f}")
    say(f"  window / stride   {res.context} / {res.stride} tokens")
    return out


def _evaluate_against(lm, base, text: str, model_dir: str, baseline: str, data, stride,
                      batch_size: int, t0: float, say: Say) -> dict:
    ctx = min(lm.config.context_length, base.config.context_length)
    before = general_perplexity(base.model, base.tokenizer, text, stride=stride,
                                batch_size=batch_size, context=ctx)
    after = general_perplexity(lm.model, lm.tokenizer, text, stride=stride,
                               batch_size=batch_size, context=ctx)
    out = {**after.to_dict(), "baseline": {"model_dir": baseline, **before.to_dict()},
           "forgetting": compare_perplexity(before, after),
           "seconds": round(time.perf_counter() - t0, 2)}
    say(f"evaluated {model_dir} against the baseline {baseline} on {data}")
    say(f"  tokens            {after.n_tokens:,} ({after.n_chars:,} characters, "
        f"{after.n_bytes:,} bytes); window / stride {after.context} / {after.stride}")
    say(f"  baseline          loss {before.loss:.4f}, perplexity {before.perplexity:.3f}, "
        f"{before.bits_per_byte:.4f} bits/byte")
    say(f"  model             loss {after.loss:.4f}, perplexity {after.perplexity:.3f}, "
        f"{after.bits_per_byte:.4f} bits/byte")
    say(format_forgetting(out["forgetting"]).splitlines()[-1])
    return out


def load_translator(model_dir: str, device: str = "cpu",
                    long_inputs: str = "truncate") -> Translator:
    """A :class:`~lmforge.inference.translate.Translator` for the encoder–decoder in
    ``model_dir`` (with its source tokenizer, when it has its own); refuses other models."""
    lm = load_model_dir(model_dir, device=device)
    if lm.config.arch != "seq2seq":
        raise ConfigError(f"{model_dir} is a {lm.config.arch} model; translation needs an "
                          "encoder–decoder (model.arch = \"seq2seq\")")
    return Translator(lm.model, lm.tokenizer, lm.meta, long_inputs=long_inputs,
                      src_tokenizer=load_source_tokenizer(model_dir))


def evaluate_translation(model_dir: str, data: str, ref: str | None = None,
                         decode: DecodeConfig | None = None, batch_size: int = 64,
                         device: str = "cpu", limit: int = 0, samples: int = 5,
                         fmt: str = "auto", say: Say | None = print) -> dict:
    """BLEU and chrF (sacrebleu) of the model's translations of ``data`` against ``ref`` (two
    line-aligned files) or of a TSV/JSONL pairs file, plus a few examples side by side."""
    say = say or _quiet
    decode = decode or DecodeConfig()
    pairs = read_parallel(data, ref, fmt=fmt)
    src, refs = pairs.src, pairs.tgt
    if limit:
        src, refs = src[:limit], refs[:limit]
    tr = load_translator(model_dir, device)
    t0 = time.perf_counter()
    hyps = tr.translate(src, decode, batch_size)
    dt = time.perf_counter() - t0
    s = translation_scores(hyps, refs)
    say(f"evaluated {model_dir} on {data}" + (f" against {ref}" if ref else ""))
    say(f"  sentences         {s.n} (beam {decode.beam_size}, {dt:.1f} s, {s.n / dt:.1f}/s)")
    say(f"  BLEU              {s.bleu:.2f}")
    say(f"  chrF              {s.chrf:.2f}")
    say(f"  signature         {s.signature}")
    if samples:
        say(side_by_side(src, hyps, refs, n=samples))
    return {"bleu": s.bleu, "chrf": s.chrf, "n": s.n, "signature": s.signature,
            "beam_size": decode.beam_size, "seconds": round(dt, 2)}


__all__ = ["evaluate_model_dir", "evaluate_perplexity", "evaluate_translation",
           "load_translator", "model_arch"]
