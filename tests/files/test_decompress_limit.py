"""A ``.gz`` input that decompresses past LMFORGE_MAX_DECOMPRESSED is one DataError naming the
file, found while reading chunk by chunk (memory stays bounded: a gzip bomb of 200 MB is
refused under a 1 GiB address-space limit); files under the limit read as before, through
every reader (plain text, JSONL, parallel lines)."""

import gzip

import pytest

from lmforge.data.parallel import read_parallel
from lmforge.errors import DataError
from lmforge.files.text import read_documents, read_text_file


@pytest.fixture
def small_limit(monkeypatch):
    monkeypatch.setenv("LMFORGE_MAX_DECOMPRESSED", str(1 << 20))


def test_gzip_bomb_is_refused_with_bounded_memory(tmp_path, small_limit, bounded):
    path = tmp_path / "bomb.txt.gz"
    with gzip.open(path, "wb") as f:
        for _ in range(200):
            f.write(b"a" * (1 << 20))
    assert path.stat().st_size < 1 << 20
    with bounded(30), pytest.raises(DataError) as e:
        read_text_file(path)
    assert str(e.value) == (f"{path}: decompresses to more than 1048576 bytes; set "
                            "LMFORGE_MAX_DECOMPRESSED to a larger number of bytes if this file "
                            "is meant to be that large")


def test_every_reader_applies_the_limit(tmp_path, small_limit):
    big = tmp_path / "big.jsonl.gz"
    big.write_bytes(gzip.compress(b'{"text": "x"}\n' * 100_000))
    with pytest.raises(DataError, match="big.jsonl.gz: decompresses to more than"):
        list(read_documents([big]))
    src, tgt = tmp_path / "train.en.gz", tmp_path / "train.de.gz"
    src.write_bytes(gzip.compress(b"a b\n" * 400_000))
    tgt.write_bytes(gzip.compress(b"c d\n"))
    with pytest.raises(DataError, match="train.en.gz: decompresses to more than"):
        read_parallel(src, tgt)


def test_files_under_the_limit_read_as_before(tmp_path, small_limit):
    path = tmp_path / "ok.txt.gz"
    path.write_bytes(gzip.compress("héllo\n".encode() * 1000))
    assert read_text_file(path) == "héllo\n" * 1000
    exact = tmp_path / "exact.txt.gz"
    exact.write_bytes(gzip.compress(b"a" * (1 << 20)))  # exactly the limit: allowed
    assert len(read_text_file(exact)) == 1 << 20


def test_bad_limit_value(tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_MAX_DECOMPRESSED", "lots")
    path = tmp_path / "x.txt.gz"
    path.write_bytes(gzip.compress(b"x"))
    with pytest.raises(DataError, match="LMFORGE_MAX_DECOMPRESSED='lots' is not a number"):
        read_text_file(path)
