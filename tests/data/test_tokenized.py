"""Tests for lmforge.data.tokenized: tokenise once, cache as a memmap, split train/val."""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

import numpy as np
import pytest

import lmforge.data.tokenized as tokenized
from lmforge.data import build_token_splits, token_dtype
from lmforge.data.tokenized import chunk_text, encode_stream
from lmforge.errors import ConfigError, LMForgeError
from lmforge.tokenizers import eos_token_id, train_tokenizer

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
SHAKESPEARE = SHARED_DATA / "tinyshakespeare" / "input.txt"


def _text(n_lines: int = 200, seed: int = 0) -> str:
    rng = random.Random(seed)
    words = "alpha beta gamma délta ✓ epsilon zeta eta theta\tiota kappa".split(" ")
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 9))) for _ in range(n_lines)]
    return "\n".join(lines) + "\n"


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    p = tmp_path / "corpus.txt"
    p.write_text(_text(), encoding="utf-8")
    return p


@pytest.fixture()
def char_tok(corpus: Path):
    return train_tokenizer([corpus], kind="char")


@pytest.fixture()
def bpe_tok(corpus: Path):
    return train_tokenizer([corpus], kind="bpe", vocab_size=320)


def test_val_is_the_tail_of_the_text_and_counts_are_exact(tmp_path: Path, corpus: Path, bpe_tok) -> None:
    text = corpus.read_text(encoding="utf-8")
    s = build_token_splits([corpus], bpe_tok, tmp_path / "cache", val_fraction=0.1)
    assert isinstance(s.train, np.memmap) and s.train.dtype == np.uint16
    assert s.n_chars == len(text) and s.n_bytes == len(text.encode("utf-8"))
    val_text = bpe_tok.decode(s.val.tolist())
    train_text = bpe_tok.decode(s.train.tolist())
    assert train_text + val_text == text
    assert text.endswith(val_text)
    assert s.val_chars == len(val_text) and s.val_bytes == len(val_text.encode("utf-8"))
    # split at floor(0.9 * n_chars), moved to the next line start
    split = math.floor(0.9 * len(text))
    assert len(train_text) >= split and text[len(train_text) - 1] == "\n"
    assert len(train_text) - split <= text.index("\n", split) + 1 - split
    assert s.sources == [str(corpus)]
    assert Path(s.cache_path).is_file() and Path(s.cache_path).parent == tmp_path / "cache"
    assert s.n_tokens == len(bpe_tok.encode(text).ids)  # splitting did not change the token count much
    sidecar = json.loads(Path(s.cache_path).with_suffix(".json").read_text())
    assert sidecar["n_tokens"] == s.n_tokens and sidecar["n_train_tokens"] == len(s.train)
    assert sidecar["dtype"] == "uint16"


def test_second_call_reuses_cache_without_tokenising(tmp_path: Path, corpus: Path, char_tok, monkeypatch) -> None:
    cache = tmp_path / "cache"
    first = build_token_splits([corpus], char_tok, cache, val_fraction=0.2)
    assert not first.reused
    bin_path = Path(first.cache_path)
    mtime = bin_path.stat().st_mtime_ns

    def boom(*args, **kwargs):
        raise AssertionError("re-tokenised although the cache is valid")

    monkeypatch.setattr(tokenized, "encode_stream", boom)
    second = build_token_splits([corpus], char_tok, cache, val_fraction=0.2)
    assert second.reused and second.cache_path == first.cache_path
    assert bin_path.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(second.train, first.train)
    np.testing.assert_array_equal(second.val, first.val)
    assert (second.val_chars, second.val_bytes, second.sources) == (first.val_chars, first.val_bytes, first.sources)

    # a different val_fraction is a different cache entry and is tokenised again
    with pytest.raises(AssertionError, match="re-tokenised"):
        build_token_splits([corpus], char_tok, cache, val_fraction=0.3)
    monkeypatch.undo()

    # changing the file invalidates the cache
    corpus.write_text(corpus.read_text(encoding="utf-8") + "more text\n", encoding="utf-8")
    os.utime(corpus, ns=(mtime + 10**9, mtime + 10**9))
    third = build_token_splits([corpus], char_tok, cache, val_fraction=0.2)
    assert not third.reused and third.cache_path != first.cache_path
    assert third.n_chars == first.n_chars + len("more text\n")


def test_truncated_cache_is_rebuilt(tmp_path: Path, corpus: Path, char_tok) -> None:
    first = build_token_splits([corpus], char_tok, tmp_path, val_fraction=0.1)
    expected, cache_path = np.array(first.train), first.cache_path
    del first  # drop the memory map before truncating the file under it
    with open(cache_path, "r+b") as f:
        f.truncate(10)
    again = build_token_splits([corpus], char_tok, tmp_path, val_fraction=0.1)
    assert not again.reused
    np.testing.assert_array_equal(again.train, expected)


def test_documents_are_separated_by_eos(tmp_path: Path, char_tok) -> None:
    a = tmp_path / "docs" / "a.txt"
    b = tmp_path / "docs" / "b.txt"
    a.parent.mkdir()
    a.write_text("alpha beta\n", encoding="utf-8")
    b.write_text("gamma\n", encoding="utf-8")
    eos = eos_token_id(char_tok)
    s = build_token_splits([tmp_path / "docs"], char_tok, tmp_path / "cache", val_fraction=0.0, eos_id=eos)
    assert len(s.val) == 0 and s.val_chars == 0
    ids = s.train.tolist()
    assert ids.count(eos) == 1
    assert char_tok.decode(ids, skip_special_tokens=False) == "alpha beta\n<|endoftext|>gamma\n"
    assert s.sources == [str(a), str(b)]


@pytest.mark.parametrize("val_fraction", [20 / 68, 23 / 68])  # exactly at, or mid-line before, the boundary
def test_split_at_document_boundary_keeps_the_separator(tmp_path: Path, char_tok, val_fraction: float) -> None:
    d = tmp_path / "docs"
    d.mkdir()
    (d / "a.txt").write_text("alpha alpha\n" * 4, encoding="utf-8")  # 48 chars
    (d / "b.txt").write_text("beta\n" * 4, encoding="utf-8")  # 20 chars; 68 in all
    eos = eos_token_id(char_tok)
    s = build_token_splits([d], char_tok, tmp_path / "cache", val_fraction=val_fraction, eos_id=eos)
    assert s.val_chars == 20
    assert s.val.tolist()[0] == eos and s.train.tolist().count(eos) == 0
    assert char_tok.decode(s.val.tolist()) == "beta\n" * 4


def test_split_without_a_later_newline_stays_mid_line(tmp_path: Path, char_tok) -> None:
    p = tmp_path / "one_line.txt"
    p.write_text("alpha beta gamma zeta", encoding="utf-8")  # 21 chars, no newline
    s = build_token_splits(p, char_tok, tmp_path / "c", val_fraction=0.5)
    assert char_tok.decode(s.train.tolist()) == "alpha beta"  # floor(0.5 * 21) = 10
    assert char_tok.decode(s.val.tolist()) == " gamma zeta" and s.val_chars == 11


def test_jsonl_input_and_bad_val_fraction(tmp_path: Path, char_tok) -> None:
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(json.dumps({"content": t}) for t in ["alpha", "beta gamma"]) + "\n", encoding="utf-8")
    s = build_token_splits(p, char_tok, tmp_path / "c", val_fraction=0.0, text_field="content")
    assert char_tok.decode(s.train.tolist()) == "alphabeta gamma"
    for bad in (1.0, -0.1):
        with pytest.raises(ConfigError, match="val_fraction"):
            build_token_splits(p, char_tok, tmp_path / "c", val_fraction=bad)
    with pytest.raises(LMForgeError, match="missing.txt"):
        build_token_splits(tmp_path / "missing.txt", char_tok, tmp_path / "c")


def test_token_dtype() -> None:
    assert token_dtype(50257) == np.uint16
    assert token_dtype(65535) == np.uint16
    assert token_dtype(65536) == np.uint32


def test_chunked_encoding_matches_whole_text(bpe_tok, char_tok) -> None:
    text = "a\n\nb \n c\nd\t\ne.\n" * 50 + _text(100, seed=3) + "x  \n\n\ny\nz"
    pieces = chunk_text(text, size=37)
    assert len(pieces) > 5 and "".join(pieces) == text
    for tok in (bpe_tok, char_tok):
        whole = tok.encode(text, add_special_tokens=False).ids
        chunked = np.concatenate([tok.encode(p).ids for p in pieces]).tolist()
        assert chunked == whole
        assert np.concatenate(list(encode_stream(tok, [text]))).tolist() == whole


@pytest.mark.realdata
@pytest.mark.skipif(not SHAKESPEARE.is_file(), reason="shared tinyshakespeare data not present")
def test_tinyshakespeare_last_tenth_is_held_out(tmp_path: Path) -> None:
    tok = train_tokenizer([SHAKESPEARE], kind="char")
    text = SHAKESPEARE.read_text(encoding="utf-8")
    s = build_token_splits([SHAKESPEARE], tok, tmp_path, val_fraction=0.1, eos_id=eos_token_id(tok))
    assert len(s.train) + len(s.val) == len(text)  # char level: one token per character
    assert abs(s.val_chars - 0.1 * len(text)) < 200
    assert tok.decode(s.val[:200].tolist()) == text[-s.val_chars :][:200]
    assert tok.decode(s.val[-200:].tolist()) == text[-200:]
