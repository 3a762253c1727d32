"""Train tokenizers with the Hugging Face ``tokenizers`` library.

Four kinds are supported:

* ``"char"``: one token per character seen in the training text (plus special tokens);
  decoding reproduces the text exactly; unseen characters become ``<unk>``.
* ``"bpe"``: GPT-2 style byte-level BPE; exact round trip for any UTF-8 text, no ``<unk>``.
* ``"wordpiece"``: BERT style WordPiece with ``[UNK] [CLS] [SEP] [PAD] [MASK]``.
* ``"unigram"``: SentencePiece style Unigram with a Metaspace (``▁``) pre-tokenizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Sequence

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from ..files.text import read_documents
from .encode import chunk_text, encode_stream
from ..errors import TokenizerError

KINDS: tuple[str, ...] = ("char", "bpe", "wordpiece", "unigram")
from .special import (BERT_SPECIAL_TOKENS, EOS_TOKEN, UNK_TOKEN,  # noqa: F401 (re-exported)
                      default_special_tokens, eos_token_id, require_tokens)


def _texts(files: Sequence[str | Path]) -> Iterator[str]:
    for doc in read_documents(list(files)):
        yield from chunk_text(doc.text)  # smaller pieces let the trainer work in parallel


def _check_files(files: Sequence[str | Path] | str | Path) -> list[str | Path]:
    if isinstance(files, (str, Path)):
        return [files]
    files = list(files)
    if not files:
        raise TokenizerError("no training files given: pass at least one text file or directory")
    return files


def _train_char(files: Sequence[str | Path], specials: list[str]) -> Tokenizer:
    # A BPE model with no merges maps every character to its own id; characters not in the
    # vocabulary become <unk>. No pre-tokenizer, so spaces and newlines are ordinary tokens.
    seen: set[str] = set()
    for text in _texts(files):
        seen.update(text)
    vocab: dict[str, int] = {}
    for tok in [*specials, *sorted(seen)]:
        vocab.setdefault(tok, len(vocab))
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK_TOKEN))
    tokenizer.add_special_tokens(specials)
    tokenizer.decoder = decoders.Fuse()  # concatenate tokens (the default joins with spaces)
    return tokenizer


def _build_trained(kind: str, vocab_size: int, min_frequency: int, specials: list[str]):
    """The empty tokenizer and the trainer for a trained (non-char) kind."""
    if kind == "bpe":
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        if vocab_size < len(alphabet) + len(specials):
            raise TokenizerError(
                f"vocab_size={vocab_size} is too small for byte-level BPE: it needs at least "
                f"{len(alphabet) + len(specials)} (256 bytes + {len(specials)} special tokens); "
                f"raise vocab_size or use kind='char' for a tiny vocabulary"
            )
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=specials,
            initial_alphabet=alphabet,
            show_progress=False,
        )
    elif kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=False)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=specials,
            show_progress=False,
        )
    else:  # unigram
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        # The Unigram trainer has no min_frequency; unk_token is required, or encoding an
        # unseen character fails at run time.
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            unk_token=UNK_TOKEN,
            show_progress=False,
        )
    return tok, trainer


def train_tokenizer(
    files: list[str | Path],
    kind: str = "bpe",
    vocab_size: int = 4096,
    min_frequency: int = 2,
    special_tokens: list[str] | None = None,
) -> Tokenizer:
    """Train a tokenizer of ``kind`` on the text in ``files`` (files, directories or JSONL).

    ``vocab_size`` is a maximum (small corpora may give fewer tokens) and is ignored for
    ``"char"``, whose vocabulary is every character seen. The special tokens get the first ids.
    Bad files raise DataError (via :func:`lmforge.data.read_documents`); a bad ``kind`` or
    ``vocab_size`` raises TokenizerError.
    """
    if kind not in KINDS:
        raise TokenizerError(f"unknown tokenizer kind {kind!r}; choose one of {', '.join(KINDS)}")
    if not isinstance(vocab_size, int) or vocab_size < 1:
        raise TokenizerError(f"vocab_size must be a positive integer, got {vocab_size!r}")
    if not isinstance(min_frequency, int) or min_frequency < 1:
        raise TokenizerError(f"min_frequency must be a positive integer, got {min_frequency!r}")
    files = _check_files(files)
    specials = list(dict.fromkeys(special_tokens)) if special_tokens is not None else default_special_tokens(kind)
    # Kinds with an unknown-token id need it in the vocabulary.
    unk = {"char": UNK_TOKEN, "unigram": UNK_TOKEN, "wordpiece": "[UNK]"}.get(kind)
    if unk is not None and unk not in specials:
        specials.append(unk)

    if kind == "char":
        return _train_char(files, specials)
    tokenizer, trainer = _build_trained(kind, vocab_size, min_frequency, specials)
    tokenizer.train_from_iterator(_texts(files), trainer=trainer)
    return tokenizer


def tokenizer_report(tokenizer: Tokenizer, texts: Iterable[str]) -> dict:
    """Vocabulary size and compression on ``texts``: ``vocab_size, n_chars, n_tokens, chars_per_token``."""
    texts = list(texts)
    n_chars = sum(len(t) for t in texts)
    n_tokens = sum(len(ids) for ids in encode_stream(tokenizer, texts))
    return {
        "vocab_size": tokenizer.get_vocab_size(with_added_tokens=True),
        "n_chars": n_chars,
        "n_tokens": n_tokens,
        "chars_per_token": n_chars / n_tokens if n_tokens else 0.0,
    }
