"""The data side of ``task = "sft"`` (:mod:`lmforge.tasks.sft`): the held-out split, the pad
id, the training and held-out batches, the held-out loss, and the generation settings a
fine-tuned model directory keeps from its base."""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..config import to_dict
from ..data.chat import SFTExample, collate_sft, sft_batch_indices
from ..errors import ConfigError
from ..objectives.sft import sft_loss, trained_tokens
from ..tokenizers import eos_token_id

PAD_TOKENS = ("<pad>", "[PAD]", "<|pad|>")
"""Token names taken for the tokenizer's pad token when nothing records it."""


def split_heldout(examples: list[SFTExample], val_fraction: float) -> tuple[list, list]:
    """(held-out, training) examples: the first ``val_fraction`` of them are held out."""
    n_val = int(len(examples) * val_fraction)
    val, train = examples[:n_val], examples[n_val:]
    if not train:
        raise ConfigError(f"sft: no training conversations left after holding out {n_val}")
    return val, train


def _in_vocab(tokenizer, i) -> bool:
    return isinstance(i, int) and not isinstance(i, bool) and \
        0 <= i < tokenizer.get_vocab_size(with_added_tokens=True)


def _tokenizer_pad(tokenizer, meta) -> int | None:
    """The tokenizer's own pad token: its padding setting (tokenizer.json), the pad token its
    source recorded (imports), or a token named like one (:data:`PAD_TOKENS`)."""
    padding = getattr(tokenizer, "padding", None)
    if padding and _in_vocab(tokenizer, padding.get("pad_id")):
        return padding["pad_id"]
    source = meta.imported_source() if meta is not None else None
    names = [(source.special_tokens or {}).get("pad_token")] if source is not None else []
    for name in [*names, *PAD_TOKENS]:
        i = tokenizer.token_to_id(name) if name else None
        if i is not None:
            return i
    return None


def sft_pad_id(tokenizer, meta) -> int:
    """The id that fills SFT batches after each conversation, the first of: (1) the
    tokenizer's pad token (:func:`_tokenizer_pad`); (2) the model's generation settings
    (meta.json ``generation.pad_token_id``); (3) its end-of-sequence token
    (``generation.eos_token_ids[0]``, else the tokenizer's ``<|endoftext|>`` / ``[SEP]``);
    (4) 0. ``meta`` is the base's ModelMeta (or None). Padding follows every real token and
    carries no label, so under causal attention it does not change the loss; the id only has
    to be a token of the vocabulary, and is the one the model itself would pad with."""
    found = _tokenizer_pad(tokenizer, meta)
    if found is not None:
        return found
    gen = meta.generation if meta is not None else None
    if gen is not None and _in_vocab(tokenizer, gen.pad_token_id):
        return gen.pad_token_id
    eos = [i for i in (gen.eos_token_ids or []) if _in_vocab(tokenizer, i)] if gen else []
    if eos:
        return eos[0]
    found = eos_token_id(tokenizer)
    return found if found is not None else 0


def sft_train_batches(examples: Sequence[SFTExample], batch_size: int, pad_id: int, seed: int,
                      grad_accum: int, world_size: Callable[[], int]):
    """``train_batch(step, micro, rank)``: the collated examples of
    :func:`~lmforge.data.chat.sft_batch_indices` (a pure function of (seed, step, micro-step,
    rank), so a resumed run sees the same batches); ``world_size()`` is asked at each call."""
    def train_batch(step: int, micro: int = 0, rank: int = 0):
        picks = sft_batch_indices(len(examples), batch_size, seed, step, micro, rank,
                                  grad_accum, world_size())
        return collate_sft([examples[i] for i in picks], pad_id)

    return train_batch


def heldout_batches(examples: Sequence[SFTExample], batch_size: int, pad_id: int):
    """The held-out examples, collated ``batch_size`` at a time, in order."""
    return (collate_sft(examples[i:i + batch_size], pad_id)
            for i in range(0, len(examples), batch_size))


@torch.no_grad()
def heldout_loss(model, examples, batch_size: int, pad_id: int) -> float | None:
    """Mean assistant-token loss over ``examples`` (eval mode)."""
    if not examples:
        return None
    was = model.training
    model.eval()
    total, n = 0.0, 0
    for ids, labels, mask in heldout_batches(examples, batch_size, pad_id):
        k = trained_tokens(labels)
        total += float(sft_loss(model, (ids, labels, mask))) * k
        n += k
    model.train(was)
    return total / n if n else None


def sft_generation(base_meta, template: str | None) -> dict | None:
    """The ``generation`` entry of a model directory fine-tuned from a base with meta
    ``base_meta`` (a ModelMeta): the base's (stop tokens, BOS, sampling defaults), with the
    chat template the conversations were rendered with (``sft.template``, else the base's own,
    wherever the base keeps it), so `lmforge chat` formats prompts as in training and stops
    where the base stops. None when neither says anything."""
    gen = base_meta.generation if base_meta is not None else None
    out = to_dict(gen) if gen is not None else {}
    if template:
        out["chat_template"] = template
    return out or None
