"""Tests for lmforge.data.parallel: reading sentence pairs, filtering, token batching, collate."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lmforge.data import (
    FilterReport,
    ParallelCorpus,
    TokenBatches,
    collate,
    filter_pairs,
    language_files,
    read_parallel,
)
from lmforge.errors import ConfigError, DataError

MULTI30K = Path("/work/shared/data/multi30k")


def _write(path: Path, text: str) -> Path:
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _jsonl(path: Path, records: list) -> Path:
    return _write(path, "".join(json.dumps(r) + "\n" for r in records))


# ---------------------------------------------------------------------------------- reading


def test_two_files_plain_and_gz_with_crlf_and_empty_lines(tmp_path: Path) -> None:
    en = _write(tmp_path / "train.en", "Hello.\r\n\nA dog runs.\n")
    de = _write(tmp_path / "train.de.gz", "Hallo.\r\nLeer\nEin Hund rennt.")  # no final newline
    c = read_parallel(en, de)
    assert isinstance(c, ParallelCorpus) and len(c) == 3
    assert c.src == ["Hello.", "", "A dog runs."]
    assert c.tgt == ["Hallo.", "Leer", "Ein Hund rennt."]
    assert c.where == ["train.en:1", "train.en:2", "train.en:3"]


def test_line_count_mismatch_names_files_counts_and_lines(tmp_path: Path) -> None:
    en = _write(tmp_path / "train.en", "".join(f"s{i}\n" for i in range(1000)))
    de = _write(tmp_path / "train.de", "".join(f"t{i}\n" for i in range(997)))
    with pytest.raises(DataError) as e:
        read_parallel(en, de)
    msg = str(e.value)
    assert "1000 lines" in msg and "997" in msg
    assert f"lines 998-1000 of {en} have no partner in {de}" in msg
    # the other way round, and a single line
    de1 = _write(tmp_path / "one.de", "".join(f"t{i}\n" for i in range(1001)))
    with pytest.raises(DataError, match=f"line 1001 of {de1} has no partner in {en}"):
        read_parallel(en, de1)


def test_tsv(tmp_path: Path) -> None:
    p = _write(tmp_path / "pairs.tsv.gz", "a b\tx y\n\nc\td\n")
    c = read_parallel(p)
    assert c.src == ["a b", "", "c"] and c.tgt == ["x y", "", "d"]
    assert c.where == ["pairs.tsv.gz:1", "pairs.tsv.gz:2", "pairs.tsv.gz:3"]
    q = _write(tmp_path / "pairs.txt", "a\tb\n")
    assert read_parallel(q, fmt="tsv").tgt == ["b"]


@pytest.mark.parametrize("bad", ["no tab here", "a\tb\tc"])
def test_tsv_malformed_line(tmp_path: Path, bad: str) -> None:
    p = _write(tmp_path / "pairs.tsv", f"a\tb\n{bad}\n")
    with pytest.raises(DataError, match=rf"pairs\.tsv:2: expected source<TAB>target \(exactly one tab\), found {bad.count(chr(9))} tabs"):
        read_parallel(p)


def test_jsonl_flat_and_custom_fields(tmp_path: Path) -> None:
    p = _jsonl(tmp_path / "d.jsonl", [{"src": "a", "tgt": "b"}, {"src": "", "tgt": "c", "id": 3}])
    c = read_parallel(p)
    assert c.src == ["a", ""] and c.tgt == ["b", "c"] and c.where == ["d.jsonl:1", "d.jsonl:2"]
    q = _jsonl(tmp_path / "e.jsonl.gz", [{"en": "hi", "fr": "salut"}])
    assert read_parallel(q, src_field="en", tgt_field="fr").tgt == ["salut"]


def test_jsonl_hugging_face_translation(tmp_path: Path) -> None:
    recs = [{"id": "0", "translation": {"en": "A man.", "de": "Ein Mann."}},
            {"id": "1", "translation": {"de": "Zwei.", "en": "Two."}}]
    p = _write(tmp_path / "hf.data", "".join(json.dumps(r) + "\n" for r in recs) + "\n")
    c = read_parallel(p, fmt="jsonl", src_field="de", tgt_field="en")
    assert c.src == ["Ein Mann.", "Zwei."] and c.tgt == ["A man.", "Two."]
    with pytest.raises(DataError, match=r"hf\.data:1: record has no field 'translation\.fr'"):
        read_parallel(p, fmt="jsonl", src_field="en", tgt_field="fr")


@pytest.mark.parametrize(
    "line, pattern",
    [
        ('{"src": "a", "tgt": ', r"bad\.jsonl:2: not valid JSON"),
        ('["a", "b"]', r"bad\.jsonl:2: expected a JSON object"),
        ('{"src": "a"}', r"bad\.jsonl:2: record has no field 'tgt' \(fields: 'src'\)"),
        ('{"src": "a", "tgt": 5}', r"bad\.jsonl:2: field 'tgt' must be a string, got int"),
        ('{"translation": {"src": "a", "tgt": null}}', r"bad\.jsonl:2: field 'translation\.tgt' must be a string"),
        ('{"translation": "a"}', r"bad\.jsonl:2: field 'translation' must be an object"),
    ],
)
def test_jsonl_malformed_rows(tmp_path: Path, line: str, pattern: str) -> None:
    p = _write(tmp_path / "bad.jsonl", '{"src": "ok", "tgt": "ok"}\n' + line + "\n")
    with pytest.raises(DataError, match=pattern):
        read_parallel(p)


def test_reading_errors(tmp_path: Path) -> None:
    empty_en, empty_de = _write(tmp_path / "x.en", ""), _write(tmp_path / "x.de", "")
    with pytest.raises(DataError, match="no sentence pairs"):
        read_parallel(empty_en, empty_de)
    with pytest.raises(DataError, match="does not exist"):
        read_parallel(tmp_path / "nope.en", empty_de)
    with pytest.raises(ConfigError, match="give the target-language file"):
        read_parallel(empty_en)
    with pytest.raises(ConfigError, match="unknown parallel data format"):
        read_parallel(empty_en, empty_de, fmt="csv")
    with pytest.raises(ConfigError, match="target file was given"):
        read_parallel(empty_en, empty_de, fmt="tsv")


def test_language_files_and_unknown_language(tmp_path: Path) -> None:
    for split in ("train", "val", "test_2016_flickr"):
        for lang in ("en", "de"):
            _write(tmp_path / f"{split}.{lang}.gz", "x\n")
    _write(tmp_path / "README.md", "not a language file\n")
    _write(tmp_path / "val.en", "x\n")  # uncompressed twin wins
    assert language_files(tmp_path, "train", "en", "de") == (tmp_path / "train.en.gz", tmp_path / "train.de.gz")
    assert language_files(str(tmp_path), "val", "en", "de")[0] == tmp_path / "val.en"
    msg = f"no train.fr(.gz) in {tmp_path}: it has languages de, en for splits test_2016_flickr, train, val"
    with pytest.raises(ConfigError) as e:
        language_files(tmp_path, "train", "en", "fr")
    assert msg in str(e.value)
    with pytest.raises(ConfigError, match=r"no dev\.en\(\.gz\).*languages de, en"):
        language_files(tmp_path, "dev", "en", "de")
    with pytest.raises(DataError, match="does not exist"):
        language_files(tmp_path / "missing", "train", "en", "de")


@pytest.mark.skipif(not MULTI30K.is_dir(), reason="Multi30k not available")
def test_real_multi30k_val() -> None:
    en, de = language_files(MULTI30K, "val", "en", "de")
    c = read_parallel(en, de)
    assert len(c) == 1014
    assert c.where[0] == "val.en.gz:1" and all(c.src) and all(c.tgt)


# ---------------------------------------------------------------------------------- filtering


def test_filter_counts_and_report() -> None:
    src = [[1, 2], [], [1] * 5, [1], [1, 2, 3], [1] * 7, [1, 2]]
    tgt = [[3, 4, 5], [1], [2] * 5, [1] * 4, [], [1], [1, 2, 3, 4, 5, 6]]
    where = [f"train.en:{i + 1}" for i in range(len(src))]
    kept, rep = filter_pairs(src, tgt, where, max_len=6, max_ratio=3.0)
    # 0 kept (ratio 1.5); 1 empty; 2 kept; 3 ratio 4; 4 empty; 5 too long (7 > 6); 6 ratio exactly 3 kept
    assert kept == [0, 2, 6]
    assert (rep.kept, rep.empty, rep.too_long, rep.bad_ratio) == (3, 2, 1, 1)
    assert rep.examples == ["train.en:2", "train.en:4", "train.en:5", "train.en:6"]
    assert str(rep) == (
        "kept 3 of 7 pairs; dropped 2 empty, 1 longer than 6 tokens, 1 with a length ratio "
        "above 3 (e.g. train.en:2, train.en:4, train.en:5, train.en:6)"
    )
    kept, rep = filter_pairs(src, tgt, where, max_len=100, max_ratio=0)  # ratio check off
    assert kept == [0, 2, 3, 5, 6] and rep.bad_ratio == 0 and rep.too_long == 0


def test_filter_report_format_and_all_dropped() -> None:
    rep = FilterReport(kept=28950, empty=3, too_long=40, bad_ratio=7, examples=["a:1"] * 5,
                       max_len=128, max_ratio=3.0)
    assert str(rep) == ("kept 28,950 of 29,000 pairs; dropped 3 empty, 40 longer than 128 tokens, "
                        "7 with a length ratio above 3 (e.g. a:1, a:1, a:1, a:1, a:1, ...)")
    assert str(FilterReport(kept=5, empty=0, too_long=0, bad_ratio=0, examples=[])) == "kept 5 of 5 pairs; dropped none"
    with pytest.raises(DataError, match="every sentence pair was filtered out: kept 0 of 1"):
        filter_pairs([[]], [[1]], ["x:1"], max_len=5, max_ratio=2.0)


# ---------------------------------------------------------------------------------- batching


def _wide_lengths(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    src = np.clip(np.exp(rng.normal(3.0, 0.8, n)), 1, 200).astype(np.int64)  # 1 .. 200, heavy tail
    tgt = np.clip((src * rng.uniform(0.7, 1.4, n)).astype(np.int64), 1, 200)
    return src, tgt


def test_token_batches_cover_every_pair_once_and_respect_max_tokens() -> None:
    src, tgt = _wide_lengths(3000)
    src[5] = 900  # longer than max_tokens: a batch of its own
    tb = TokenBatches(src, tgt, max_tokens=600, seed=3)
    n = len(tb)
    for epoch in (0, 2):
        seen = np.concatenate([tb.batch(epoch * n + j) for j in range(n)])
        assert np.array_equal(np.sort(seen), np.arange(3000))
    for j in range(n):
        idx = tb.batch(j)
        assert idx.dtype == np.int64
        width = max(src[idx].max(), tgt[idx].max())
        assert len(idx) * width <= 600 or (len(idx) == 1 and 5 in idx)
        assert tb.tokens(j) == int(src[idx].sum() + tgt[idx].sum())
    # epochs visit the batches in different orders; batch i is a pure function of (seed, i)
    assert not all(np.array_equal(tb.batch(j), tb.batch(n + j)) for j in range(n))
    again = TokenBatches(src, tgt, max_tokens=600, seed=3)
    for i in (0, 7, n + 1, 5 * n + 3, 2, 1):  # random access in any order, like a resumed run
        assert np.array_equal(tb.batch(i), again.batch(i))
    other = TokenBatches(src, tgt, max_tokens=600, seed=4)
    assert not all(np.array_equal(tb.batch(j), other.batch(j)) for j in range(n))
    # without shuffling the batches come in length order
    plain = TokenBatches(src, tgt, max_tokens=600, seed=3, shuffle=False)
    longest = [max(src[plain.batch(j)].max(), tgt[plain.batch(j)].max()) for j in range(len(plain))]
    assert longest == sorted(longest) and np.array_equal(plain.batch(0), plain.batch(len(plain)))


def test_bucketing_pads_far_less_than_random_batches() -> None:
    src, tgt = _wide_lengths(5000, seed=1)
    tb = TokenBatches(src, tgt, max_tokens=2000, seed=0)
    bucketed = tb.padding_fraction()
    # random batches with the same batch sizes
    sizes = [len(tb.batch(j)) for j in range(len(tb))]
    perm = np.random.default_rng(0).permutation(5000)
    real = positions = 0
    for idx in np.split(perm, np.cumsum(sizes)[:-1]):
        real += src[idx].sum() + tgt[idx].sum()
        positions += len(idx) * (src[idx].max() + tgt[idx].max())
    random_frac = 1 - real / positions
    assert random_frac > 0.4
    assert bucketed < 0.15 and bucketed < random_frac / 4, (bucketed, random_frac)


def test_token_batches_errors() -> None:
    with pytest.raises(DataError, match="one target length per source"):
        TokenBatches([1, 2], [1], max_tokens=10, seed=0)
    with pytest.raises(DataError, match="at least 1"):
        TokenBatches([1, 0], [1, 1], max_tokens=10, seed=0)
    with pytest.raises(ConfigError, match="max_tokens"):
        TokenBatches([1], [1], max_tokens=0, seed=0)
    with pytest.raises(DataError, match="non-negative"):
        TokenBatches([1], [1], max_tokens=5, seed=0).batch(-1)


# ---------------------------------------------------------------------------------- collate


def test_collate_exact_values() -> None:
    out = collate([[5, 6, 7], [8]], [[9], [10, 11]], pad_id=0, bos_id=1, eos_id=2)
    assert set(out) == {"src", "src_mask", "tgt_in", "tgt_out", "tgt_mask"}
    assert torch.equal(out["src"], torch.tensor([[5, 6, 7, 2], [8, 2, 0, 0]]))
    assert torch.equal(out["src_mask"], torch.tensor([[True, True, True, True], [True, True, False, False]]))
    assert torch.equal(out["tgt_in"], torch.tensor([[1, 9, 0], [1, 10, 11]]))
    assert torch.equal(out["tgt_out"], torch.tensor([[9, 2, -100], [10, 11, 2]]))
    assert torch.equal(out["tgt_mask"], torch.tensor([[True, True, False], [True, True, True]]))
    for k in ("src", "tgt_in", "tgt_out"):
        assert out[k].dtype == torch.long
    assert out["src_mask"].dtype == out["tgt_mask"].dtype == torch.bool
    with pytest.raises(DataError, match="empty batch"):
        collate([], [], pad_id=0, bos_id=1, eos_id=2)
