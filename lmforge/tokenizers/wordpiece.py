"""A BERT ``vocab.txt`` (WordPiece) as a ``tokenizers`` tokenizer, built the way transformers
builds ``BertTokenizerFast`` from the same file (its BertConverter): BERT's normaliser (clean
text, CJK characters split, accents stripped when lower-casing), BERT's pre-tokeniser,
WordPiece with ``##`` continuations and words over 100 characters unknown, and
``[CLS] A [SEP]`` / ``[CLS] A [SEP] B [SEP]`` around the text."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from ..errors import TokenizerError


def read_vocab_txt(path: Path) -> dict[str, int]:
    """One token per line, the line number its id (as transformers' ``load_vocab``)."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise TokenizerError(f"{path} cannot be read as a UTF-8 vocabulary ({e})") from None
    if lines and lines[-1] == "":
        lines.pop()
    vocab: dict[str, int] = {}
    for i, token in enumerate(lines):
        vocab.setdefault(token.rstrip("\n"), i)
    if not vocab:
        raise TokenizerError(f"{path} is empty: a WordPiece vocabulary has one token per line")
    return vocab


def wordpiece_tokenizer(vocab: dict[str, int], *, lowercase: bool = True,
                        strip_accents: bool | None = None, chinese_chars: bool = True,
                        unk: str = "[UNK]", cls: str = "[CLS]", sep: str = "[SEP]",
                        specials: list[str] = ()) -> Tokenizer:
    """The tokenizer of ``vocab`` (token -> id) as ``BertTokenizerFast`` makes it."""
    for name, token in (("unk_token", unk), ("cls_token", cls), ("sep_token", sep)):
        if token not in vocab:
            raise TokenizerError(f"the WordPiece vocabulary has no {name} {token!r}; name the "
                                 "right one in tokenizer_config.json")
    tok = Tokenizer(models.WordPiece(vocab, unk_token=unk, max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True,
                                                handle_chinese_chars=chinese_chars,
                                                strip_accents=strip_accents, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])])
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens([t for t in dict.fromkeys([unk, cls, sep, *specials]) if t in vocab])
    return tok
