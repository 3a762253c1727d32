"""Forgetting: how much fine-tuning costs a model on general text.

Fine-tuning on a narrow task (instructions, one domain) tends to raise the model's perplexity
on everything else. The report scores one general held-out text with the model before and
after fine-tuning, exactly as ``lmforge eval`` scores it (sliding window over the model's
context, the tokenizer's ``<|endoftext|>`` as the first token's history), and gives both
perplexities and the change::

    report = forgetting_report(base.model, tuned.model, tuned.tokenizer, text)
    report["ppl_before"], report["ppl_after"], report["change"]   # change: +0.12 = 12% higher

``lmforge eval TUNED_DIR --data TEXT --baseline BASE_DIR`` prints the same, and an SFT run
with ``[sft] general_text = "PATH"`` measures it before and after training.
"""

from __future__ import annotations

from torch import nn

from ..errors import DataError
from ..files.text import read_documents
from ..tokenizers.special import eos_token_id
from .perplexity import PerplexityResult, text_perplexity


def read_text(paths, max_chars: int = 0, text_field: str = "text") -> str:
    """The documents of ``paths`` (files, directories, JSONL) joined by blank lines, as
    ``lmforge eval --data`` reads them; only the first ``max_chars`` characters (0 = all)."""
    text = "\n\n".join(d.text for d in read_documents(paths, text_field=text_field))
    return text[:max_chars] if max_chars else text


def general_perplexity(model: nn.Module, tokenizer, text: str, *, stride: int | None = None,
                       batch_size: int = 8, context: int | None = None) -> PerplexityResult:
    """``text``'s perplexity under ``model``, as ``lmforge eval`` computes it (the first token
    is predicted from the tokenizer's ``<|endoftext|>``/``[SEP]`` when it has one)."""
    return text_perplexity(model, tokenizer, text, stride=stride, batch_size=batch_size,
                           bos_id=eos_token_id(tokenizer), context=context)


def compare_perplexity(before: PerplexityResult, after: PerplexityResult) -> dict:
    """The report of two scores of one text: perplexities, mean losses (nats per token), bits
    per byte, and ``change`` = ppl_after / ppl_before - 1 (``loss_change`` = after - before).
    Perplexities of different tokenizations are not comparable: ``same_tokens`` says whether
    both scored the same number of tokens; bits per byte compare either way."""
    if before.n_chars != after.n_chars:
        raise DataError(f"the two scores are of different texts ({before.n_chars} and "
                        f"{after.n_chars} characters)")
    return {
        "ppl_before": before.perplexity, "ppl_after": after.perplexity,
        "change": after.perplexity / before.perplexity - 1.0,
        "loss_before": before.loss, "loss_after": after.loss,
        "loss_change": after.loss - before.loss,
        "bpb_before": before.bits_per_byte, "bpb_after": after.bits_per_byte,
        "n_tokens": after.n_tokens, "n_chars": after.n_chars,
        "context": after.context, "stride": after.stride,
        "same_tokens": before.n_tokens == after.n_tokens,
    }


def forgetting_report(base_model: nn.Module, tuned_model: nn.Module, tokenizer, text: str, *,
                      tuned_tokenizer=None, stride: int | None = None, batch_size: int = 8,
                      context: int | None = None) -> dict:
    """Score ``text`` with the model before (``base_model``) and after fine-tuning
    (``tuned_model``): see :func:`compare_perplexity` for the keys. Both use the same window
    (``context``, default: the shorter of the two models' contexts) and stride; the numbers
    are those of separate :func:`general_perplexity` calls with that window."""
    if not text:
        raise DataError("the general text is empty: give some held-out text to score")
    ctx = context or min(base_model.cfg.context_length, tuned_model.cfg.context_length)
    before = general_perplexity(base_model, tokenizer, text, stride=stride,
                                batch_size=batch_size, context=ctx)
    after = general_perplexity(tuned_model, tuned_tokenizer or tokenizer, text, stride=stride,
                               batch_size=batch_size, context=ctx)
    return compare_perplexity(before, after)


def format_forgetting(report: dict, indent: str = "  ") -> str:
    """Three printable lines: perplexity before, after, and the change."""
    note = "" if report.get("same_tokens", True) else \
        " (different tokenizers: compare bits per byte)"
    return (f"{indent}general text ppl before  {report['ppl_before']:.3f} "
            f"({report['bpb_before']:.4f} bits/byte)\n"
            f"{indent}general text ppl after   {report['ppl_after']:.3f} "
            f"({report['bpb_after']:.4f} bits/byte)\n"
            f"{indent}change                   {100 * report['change']:+.2f}% "
            f"(loss {report['loss_change']:+.4f} nats/token, {report['n_tokens']:,} tokens){note}")
