"""Tests for lmforge.tokenizers: training the four kinds, reports, saving and loading."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from lmforge.errors import DataError, TokenizerError
from lmforge.tokenizers import (
    KINDS,
    eos_token_id,
    load_tokenizer,
    save_tokenizer,
    tokenizer_report,
    train_tokenizer,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
SHAKESPEARE = SHARED_DATA / "tinyshakespeare" / "input.txt"

TRICKY = "héllo\tworld\n\n  ✓ 日本語 🎉 naïve café\r\nend  \n\t\ttabs\u00a0nbsp\n"

_WORDS = (
    "the quick brown fox jumps over a lazy dog while the model learns to predict "
    "every next token from the text it has seen so far and training goes on"
).split()


def _english(n_lines: int = 400, seed: int = 0) -> str:
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(5, 12))]
        lines.append(" ".join(words).capitalize() + ".")
    return "\n".join(lines) + "\n"


@pytest.fixture()
def english_file(tmp_path: Path) -> Path:
    p = tmp_path / "english.txt"
    p.write_text(_english(), encoding="utf-8")
    return p


def test_char_round_trip_is_exact_and_unknowns_map_to_unk(tmp_path: Path) -> None:
    p = tmp_path / "tricky.txt"
    p.write_text(TRICKY * 3, encoding="utf-8")
    tok = train_tokenizer([p], kind="char")
    # vocabulary: every character seen plus the special tokens
    assert tok.get_vocab_size() == len(set(TRICKY)) + 2
    ids = tok.encode(TRICKY).ids
    assert len(ids) == len(TRICKY)  # one token per character
    assert tok.decode(ids) == TRICKY
    unk = tok.token_to_id("<unk>")
    assert unk is not None
    assert tok.encode("hZ").ids == [tok.token_to_id("h"), unk]
    assert eos_token_id(tok) == tok.token_to_id("<|endoftext|>") == 0


def test_bpe_round_trips_any_utf8_and_compresses_english(english_file: Path) -> None:
    tok = train_tokenizer([english_file], kind="bpe", vocab_size=400, min_frequency=2)
    assert 256 < tok.get_vocab_size() <= 400
    # text the tokenizer never saw, with unicode, tabs, CRLF and runs of spaces
    for text in (TRICKY, "  leading and trailing  ", "\n\n\n", "Ωμέγα → ∞ 😀😀 \x01ctrl"):
        assert tok.decode(tok.encode(text).ids) == text
    report = tokenizer_report(tok, [english_file.read_text(encoding="utf-8")])
    assert report["vocab_size"] == tok.get_vocab_size()
    assert report["n_chars"] == len(english_file.read_text(encoding="utf-8"))
    assert report["chars_per_token"] > 1.5
    assert report["n_chars"] / report["n_tokens"] == pytest.approx(report["chars_per_token"])
    assert eos_token_id(tok) == tok.token_to_id("<|endoftext|>")


def test_wordpiece_trains_bert_style_vocab(english_file: Path) -> None:
    tok = train_tokenizer([english_file], kind="wordpiece", vocab_size=300, min_frequency=1)
    assert 60 <= tok.get_vocab_size() <= 300
    for special in ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"):
        assert tok.token_to_id(special) is not None
    assert eos_token_id(tok) == tok.token_to_id("[SEP]")
    text = "The quick brown fox jumps over a lazy dog."
    enc = tok.encode(text, add_special_tokens=False)
    assert tok.token_to_id("[UNK]") not in enc.ids
    assert tok.decode(enc.ids) == "The quick brown fox jumps over a lazy dog."
    assert tok.encode("€").ids == [tok.token_to_id("[UNK]")]


def test_unigram_trains_and_decodes(english_file: Path) -> None:
    tok = train_tokenizer([english_file], kind="unigram", vocab_size=200)
    assert 30 <= tok.get_vocab_size() <= 200
    assert tok.token_to_id("<unk>") is not None
    text = "the lazy dog learns to predict the next token"
    assert tok.decode(tok.encode(text).ids) == text
    assert eos_token_id(tok) == tok.token_to_id("<|endoftext|>")


def test_custom_special_tokens_come_first_and_no_eos_gives_none(english_file: Path) -> None:
    tok = train_tokenizer([english_file], kind="bpe", vocab_size=300, special_tokens=["<pad>", "<s>"])
    assert tok.token_to_id("<pad>") == 0 and tok.token_to_id("<s>") == 1
    assert eos_token_id(tok) is None


def test_unknown_kind_lists_the_kinds(english_file: Path) -> None:
    with pytest.raises(TokenizerError) as e:
        train_tokenizer([english_file], kind="sentencepiece")
    for kind in KINDS:
        assert kind in str(e.value)


def test_bpe_vocab_too_small_is_explained(english_file: Path) -> None:
    with pytest.raises(TokenizerError, match="vocab_size=100"):
        train_tokenizer([english_file], kind="bpe", vocab_size=100)


def test_bad_training_files_raise_data_error_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(DataError, match="nope.txt"):
        train_tokenizer([missing], kind="char")
    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"abc\x00def")
    with pytest.raises(DataError, match="blob.txt.*binary"):
        train_tokenizer([binary], kind="bpe", vocab_size=300)
    with pytest.raises(TokenizerError):
        train_tokenizer([], kind="bpe")


@pytest.mark.parametrize("as_dir", [False, True])
def test_save_and_load_round_trip(tmp_path: Path, english_file: Path, as_dir: bool) -> None:
    tok = train_tokenizer([english_file], kind="bpe", vocab_size=300)
    target = tmp_path / "tok" if as_dir else tmp_path / "my_tokenizer.json"
    written = save_tokenizer(tok, target)
    assert written.is_file()
    assert written.name == ("tokenizer.json" if as_dir else "my_tokenizer.json")
    assert not [p for p in written.parent.iterdir() if ".tmp" in p.name]  # no temp file left
    loaded = load_tokenizer(target)
    assert isinstance(loaded, Tokenizer)
    assert loaded.encode(TRICKY).ids == tok.encode(TRICKY).ids
    assert loaded.decode(loaded.encode(TRICKY).ids) == TRICKY


def test_load_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="missing.json"):
        load_tokenizer(tmp_path / "missing.json")
    empty_dir = tmp_path / "empty_dir"
    empty_dir.mkdir()
    with pytest.raises(TokenizerError, match="empty_dir.*tokenizer.json"):
        load_tokenizer(empty_dir)
    bad = tmp_path / "broken.json"
    bad.write_text('{"version": "1.0", "model": ', encoding="utf-8")
    with pytest.raises(TokenizerError, match="broken.json.*not a valid tokenizer.json"):
        load_tokenizer(bad)


@pytest.mark.realdata
@pytest.mark.skipif(not SHAKESPEARE.is_file(), reason="shared tinyshakespeare data not present")
def test_bpe_on_tinyshakespeare_round_trips_and_compresses() -> None:
    tok = train_tokenizer([SHAKESPEARE], kind="bpe", vocab_size=1024)
    assert tok.get_vocab_size() == 1024
    text = SHAKESPEARE.read_text(encoding="utf-8")[:50_000]
    assert tok.decode(tok.encode(text).ids) == text
    assert tokenizer_report(tok, [text])["chars_per_token"] > 2.2
