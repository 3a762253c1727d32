"""Texts -> [CLS] text [SEP] ids: truncation strategies, pair budgets, padding, specials."""

import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from lmforge.data.encode import encode_texts, pair_budgets, plain_tokenizer, truncate
from lmforge.errors import ConfigError, TokenizerError

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]


def word_tokenizer(specials=SPECIALS) -> Tokenizer:
    vocab = {t: i for i, t in enumerate(specials + [f"w{i}" for i in range(40)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def words(*idx) -> str:
    return " ".join(f"w{i}" for i in idx)


def test_truncation_strategies():
    ids = list(range(10))
    assert truncate(ids, 4, "head") == [0, 1, 2, 3]
    assert truncate(ids, 4, "tail") == [6, 7, 8, 9]
    assert truncate(ids, 8, "head+tail") == [0, 1, 4, 5, 6, 7, 8, 9]  # a quarter from the start
    assert truncate(ids, 510, "head+tail") == ids  # short texts are kept whole
    long = list(range(1000))
    kept = truncate(long, 510, "head+tail")
    assert kept[:127] == long[:127] and kept[127:] == long[-383:] and len(kept) == 510
    with pytest.raises(ConfigError, match="head, tail, head\\+tail"):
        truncate(ids, 4, "middle")


def test_pair_budgets_take_from_the_longer_text_first():
    assert pair_budgets(3, 4, 10) == (3, 4)
    assert pair_budgets(10, 2, 6) == (4, 2)
    assert pair_budgets(2, 10, 6) == (2, 4)
    assert pair_budgets(5, 5, 6) == (3, 3)
    assert pair_budgets(6, 5, 6) == (3, 3)


def test_encode_single_texts_with_each_strategy():
    tok = word_tokenizer()
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    w = lambda i: tok.token_to_id(f"w{i}")  # noqa: E731
    texts = [words(*range(10)), words(1, 2)]
    for strategy, kept in (("head", [0, 1, 2, 3]), ("tail", [6, 7, 8, 9]),
                           ("head+tail", [0, 7, 8, 9])):
        enc = encode_texts(tok, texts, max_len=6, truncation=strategy)
        assert enc.ids[0].tolist() == [cls] + [w(i) for i in kept] + [sep], strategy
        assert enc.ids[1].tolist() == [cls, w(1), w(2), sep]
        assert enc.n_truncated == 1
    b = enc.batch([1, 0])
    assert b["input_ids"].shape == (2, 6) and b["padding_mask"].sum(1).tolist() == [4, 6]
    assert b["input_ids"][0, 4:].tolist() == [tok.token_to_id("[PAD]")] * 2
    assert b["input_ids"].dtype == torch.int64 and b["padding_mask"].dtype == torch.bool


def test_encode_pairs_sets_token_types_and_shares_the_budget():
    tok = word_tokenizer()
    enc = encode_texts(tok, [words(*range(8))], [words(20, 21)], max_len=9)
    ids, types = enc.ids[0], enc.type_ids[0]
    assert len(ids) == 9  # [CLS] 4 [SEP] 2 [SEP]: the longer text lost 4 tokens
    assert types.tolist() == [0] * 6 + [1] * 3
    assert enc.n_truncated == 1


def test_missing_special_tokens_and_too_short_max_len():
    with pytest.raises(TokenizerError, match=r"\[CLS\], \[SEP\]"):
        encode_texts(word_tokenizer(["[PAD]", "[UNK]"]), ["w1"], max_len=8)
    with pytest.raises(ConfigError, match="too short"):
        encode_texts(word_tokenizer(), ["w1"], max_len=2)


def test_the_tokenizers_own_padding_and_truncation_are_ignored_and_kept():
    tok = word_tokenizer()
    tok.enable_padding(pad_id=0, pad_token="[PAD]", length=16)  # as MiniLM's tokenizer.json
    tok.enable_truncation(3)
    enc = encode_texts(tok, [words(*range(6))], max_len=12)
    assert len(enc.ids[0]) == 8 and enc.n_truncated == 0
    assert json.loads(tok.to_str())["padding"] is not None  # the caller's tokenizer is untouched
    assert json.loads(plain_tokenizer(tok).to_str())["padding"] is None
