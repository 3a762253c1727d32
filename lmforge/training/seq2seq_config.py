"""``[seq2seq]``: the run config of encoder–decoder training (``model.arch = "seq2seq"``;
:mod:`lmforge.tasks.seq2seq`): translation on a parallel corpus, or T5-style span-corruption
pre-training on plain text. ``docs/translation.md`` walks through both."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError


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
