"""Fuzzing the data readers: read_documents (text, JSONL, gzip), read_labeled (CSV, TSV,
JSONL) and read_parallel (two line files, TSV, JSONL) on random and mutated bytes. Any result
is data or an LMForgeError (DataError naming the file), never another exception."""

import gzip
import zlib
import json
import tempfile
from pathlib import Path

from fuzz_strategies import file_bytes
from hypothesis import HealthCheck, given, settings, strategies as st

from lmforge.data import read_documents, read_labeled, read_parallel
from lmforge.errors import LMForgeError

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
JSONL = b"".join(json.dumps({"text": t, "label": l, "src": t, "tgt": t[::-1],
                             "translation": {"en": t, "de": t}}).encode() + b"\n"
                 for t, l in [("the cat sat", "pos"), ("\u00e9t\u00e9 \U0001f600", "neg"),
                              ("a\tb", "pos")])
CSV = b'text,label\n"the cat, sat",pos\nhello,neg\n"multi\nline",pos\n'
TSV = b"text\tlabel\nthe cat sat\tpos\nhello\tneg\n"
GZ = gzip.compress(JSONL, mtime=0)


def _call(fn, files: dict[str, bytes], *args, **kw):
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for name, data in files.items():
            (Path(d) / name).write_bytes(data)
            paths.append(str(Path(d) / name))
        try:
            result = fn(*paths, *args, **kw)
            return list(result) if fn is read_documents else result
        except LMForgeError as e:
            assert str(e) and "\n" not in str(e).strip()
            return e


@FUZZ
@given(name=st.sampled_from(["d.txt", "d.jsonl"]), data=file_bytes(JSONL))
def test_read_documents(bounded, name, data):
    with bounded(20):
        _call(read_documents, {name: data})


@FUZZ
@given(name=st.sampled_from(["d.txt.gz", "d.jsonl.gz"]),
       data=st.one_of(file_bytes(GZ), file_bytes(JSONL).map(lambda b: gzip.compress(b, mtime=0))))
def test_read_documents_gzip(bounded, name, data):
    with bounded(20):
        _call(read_documents, {name: data})


@FUZZ
@given(data=st.one_of(st.tuples(st.just("d.csv"), file_bytes(CSV)),
                      st.tuples(st.just("d.tsv"), file_bytes(TSV)),
                      st.tuples(st.just("d.jsonl"), file_bytes(JSONL))),
       labels=st.sampled_from(["required", "optional", "none"]))
def test_read_labeled(bounded, data, labels):
    name, raw = data
    with bounded(20):
        _call(read_labeled, {name: raw}, labels=labels)


@FUZZ
@given(src=file_bytes(b"a cat\nthe dog\n\xc3\xa9\n"), tgt=file_bytes(b"eine Katze\nder Hund\nx\n"))
def test_read_parallel_two_files(bounded, src, tgt):
    with bounded(20):
        _call(read_parallel, {"s.en": src, "t.de": tgt})


@FUZZ
@given(data=st.one_of(st.tuples(st.just("p.tsv"), file_bytes(b"a cat\teine Katze\nb\tc\n")),
                      st.tuples(st.just("p.jsonl"), file_bytes(JSONL))),
       fields=st.sampled_from([("src", "tgt"), ("en", "de")]))
def test_read_parallel_one_file(bounded, data, fields):
    name, raw = data
    with bounded(20):
        _call(read_parallel, {name: raw}, src_field=fields[0], tgt_field=fields[1])


def test_the_seeds_read():
    assert len(_call(read_documents, {"d.jsonl.gz": GZ})) == 3
    assert len(_call(read_labeled, {"d.csv": CSV}).texts) == 3
    assert len(_call(read_parallel, {"p.jsonl": JSONL}, src_field="en", tgt_field="de")) == 3


def test_corrupt_deflate_stream_found_by_fuzzing(tmp_path):
    """A valid gzip header over a corrupt deflate stream raised zlib.error before the fix."""
    import pytest

    data = bytearray(gzip.compress(b"hello world " * 50, mtime=0))
    data[10] ^= 0xFF  # the first byte of the deflate stream: zlib.error "invalid code lengths"
    with pytest.raises(zlib.error):
        gzip.decompress(bytes(data))
    (tmp_path / "d.jsonl.gz").write_bytes(bytes(data))
    (tmp_path / "d.tsv.gz").write_bytes(bytes(data))
    with pytest.raises(LMForgeError, match="not a valid gzip file"):
        list(read_documents(tmp_path / "d.jsonl.gz"))
    with pytest.raises(LMForgeError, match="d.tsv.gz"):
        read_parallel(tmp_path / "d.tsv.gz")
