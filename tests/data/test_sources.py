"""Tests for lmforge.files.text (reading files, directories, JSONL) and the built-in corpus."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from lmforge.data import (
    Document,
    count_chars_bytes,
    describe_stdlib_corpus,
    read_documents,
    stdlib_corpus_files,
)
from lmforge.errors import DataError, LMForgeError


def _write(p: Path, text: str) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return p


def test_text_file_is_one_document_read_exactly(tmp_path: Path) -> None:
    text = "line one\r\nline two\n\tindented ✓\n"
    p = tmp_path / "a.txt"
    p.write_bytes(text.encode("utf-8"))
    docs = list(read_documents(p))
    assert docs == [Document(source=str(p), text=text)]
    assert count_chars_bytes(docs) == (len(text), len(text.encode("utf-8")))


def test_gzip_and_bom_and_path_list(tmp_path: Path) -> None:
    gz = tmp_path / "b.txt.gz"
    with gzip.open(gz, "wb") as f:
        f.write("gzipped text\n".encode("utf-8"))
    bom = tmp_path / "bom.md"
    bom.write_bytes(b"\xef\xbb\xbfwith bom\n")
    docs = list(read_documents([str(gz), bom]))
    assert [d.text for d in docs] == ["gzipped text\n", "with bom\n"]


def test_directory_recurses_in_sorted_order_and_skips_junk(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    _write(root / "b.txt", "bee\n")
    _write(root / "a.md", "ay\n")
    _write(root / "sub" / "c.py", "print('c')\n")
    _write(root / "sub" / "README", "no extension\n")
    _write(root / "sub" / "empty.txt", "")  # empty files in a directory are skipped
    _write(root / ".hidden.txt", "hidden\n")
    _write(root / ".git" / "config.txt", "hidden dir\n")
    _write(root / "__pycache__" / "x.txt", "cache\n")
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (root / "sub" / "blob").write_bytes(b"\x00\x01\x02binary")  # no extension but binary
    with gzip.open(root / "sub" / "d.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps({"text": "from jsonl.gz"}) + "\n")
    docs = list(read_documents(root))
    names = [Path(d.source).relative_to(root).as_posix() for d in docs]
    assert names == ["a.md", "b.txt", "sub/README", "sub/c.py", "sub/d.jsonl.gz"]
    assert [d.text for d in docs][-1] == "from jsonl.gz"


def test_jsonl_records_and_custom_field(tmp_path: Path) -> None:
    p = tmp_path / "data.jsonl"
    rows = [{"body": "first\nrecord", "id": 1}, {"body": "second \u2028 record"}, {"body": ""}]
    p.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n", encoding="utf-8")
    docs = list(read_documents(p, text_field="body"))
    assert [d.text for d in docs] == ["first\nrecord", "second \u2028 record"]  # empty text skipped
    assert all(d.source == str(p) for d in docs)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does_not_exist.txt.*does not exist"):
        list(read_documents(tmp_path / "does_not_exist.txt"))


def test_directory_without_text_files(tmp_path: Path) -> None:
    d = tmp_path / "pics"
    d.mkdir()
    (d / "a.png").write_bytes(b"\x89PNG\x00")
    with pytest.raises(DataError, match="pics.*no readable text files"):
        list(read_documents(d))


def test_empty_inputs_say_no_text_found(tmp_path: Path) -> None:
    empty = _write(tmp_path / "empty.txt", "")
    with pytest.raises(DataError, match="no text found in file .*empty.txt"):
        list(read_documents(empty))
    d = tmp_path / "blank_dir"
    _write(d / "x.txt", "")
    _write(d / "y.txt", "  \n\n")
    with pytest.raises(DataError, match="no text found in any file in directory .*blank_dir"):
        list(read_documents(d))
    with pytest.raises(DataError, match="no data paths"):
        list(read_documents([]))


def test_binary_file_is_named(tmp_path: Path) -> None:
    p = tmp_path / "weights.txt"
    p.write_bytes(b"hello\nworld\x00\x00")
    with pytest.raises(DataError, match=r"weights.txt: looks binary \(NUL byte at line 2"):
        list(read_documents(p))


def test_non_utf8_gives_line_offset_and_iconv_hint(tmp_path: Path) -> None:
    p = tmp_path / "latin.txt"
    p.write_bytes("first line\nsecond caf".encode() + "é".encode("latin-1") + b"\n")
    with pytest.raises(DataError) as e:
        list(read_documents(p))
    msg = str(e.value)
    assert "latin.txt:2" in msg
    assert "byte offset 21" in msg
    assert "iconv -f latin1 -t utf-8" in msg
    assert isinstance(e.value, LMForgeError)


@pytest.mark.parametrize(
    "line, expected",
    [
        ("{not json", r"bad.jsonl:2: not valid JSON"),
        ('{"title": "x"}', r"bad.jsonl:2: record has no field 'text' \(fields: 'title'\)"),
        ('{"text": 42}', r"bad.jsonl:2: field 'text' must be a string, got int"),
        ('["text"]', r"bad.jsonl:2: expected a JSON object"),
    ],
)
def test_bad_jsonl_lines_name_file_and_line(tmp_path: Path, line: str, expected: str) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "ok"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=expected):
        list(read_documents(p))


def test_stdlib_corpus_is_sorted_bounded_and_readable() -> None:
    files = stdlib_corpus_files(max_bytes=200_000)
    assert files and all(p.suffix == ".py" for p in files)
    assert [p.name for p in files] == sorted(p.name for p in files)
    assert sum(p.stat().st_size for p in files) <= 200_000 or len(files) == 1
    docs = list(read_documents(files))
    assert len(docs) == len(files)
    desc = describe_stdlib_corpus(files)
    assert desc.startswith("Python 3.") and f"({len(files)} files," in desc and desc.endswith("MB)")
