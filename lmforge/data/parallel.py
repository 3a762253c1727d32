"""Parallel text (sentence pairs) for machine translation with an encoder-decoder model.

Reading
    :func:`read_parallel` reads a corpus of (source, target) sentence pairs from two
    line-aligned files (``train.en`` / ``train.de``, optionally ``.gz``), one TSV file
    (``src<TAB>tgt`` per line) or one JSONL file (``{"src": ..., "tgt": ...}`` records, or
    Hugging Face style ``{"translation": {"en": ..., "de": ...}}``). Every pair remembers where
    it came from (``"train.en:17"``) so later reports can point at it.
    :func:`language_files` finds ``{split}.{lang}(.gz)`` files in a directory (Multi30k layout).

Filtering
    :func:`filter_pairs` drops pairs that are empty, too long or have a bad length ratio, after
    tokenisation, and returns a :class:`FilterReport` that says what was dropped and where.

Batching
    :class:`TokenBatches` groups pairs of similar length into batches holding at most
    ``max_tokens`` padded positions per side; the batches are fixed, their order is a seeded
    permutation per epoch, and batch ``i`` is a pure function of ``(lengths, max_tokens, seed, i)``
    so a resumed run sees exactly the same batches.
    :func:`collate` pads one batch into the tensors the model and loss need.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .sources import _inner_suffix, read_text_file

PathLike = Union[str, "os.PathLike[str]"]

#: Label used for ignored positions in ``tgt_out`` (PyTorch cross-entropy's ``ignore_index``).
IGNORE_INDEX = -100
#: Formats :func:`read_parallel` understands.
FORMATS = ("auto", "lines", "tsv", "jsonl")
_MAX_EXAMPLES = 5


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


@dataclass
class ParallelCorpus:
    """Sentence pairs: ``src[i]`` translates to ``tgt[i]``; ``where[i]`` is where pair i came
    from, as ``"file:line"`` with the file's name (no directory) and a 1-based line number."""

    src: list[str]
    tgt: list[str]
    where: list[str]

    def __post_init__(self) -> None:
        if not (len(self.src) == len(self.tgt) == len(self.where)):
            raise DataError(
                f"a parallel corpus needs as many targets and locations as sources, got "
                f"{len(self.src)} sources, {len(self.tgt)} targets, {len(self.where)} locations"
            )

    def __len__(self) -> int:
        return len(self.src)


def _as_path(p: PathLike) -> Path:
    return Path(os.path.expanduser(os.fspath(p)))


def _read_lines(path: Path) -> list[str]:
    """The lines of a text file (``.gz`` allowed), without their ``\\n`` / ``\\r\\n`` ends.

    A final newline does not start another line; an empty file has no lines.
    """
    if not path.exists():
        raise DataError(f"data file {str(path)!r} does not exist; check the spelling of the path")
    if path.is_dir():
        raise DataError(f"{path} is a directory; give a file of parallel text (or use language_files)")
    text = read_text_file(path)
    # split on "\n" only: str.splitlines() would also split at U+2028, \x1c, ... inside sentences
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _line_span(first: int, last: int) -> str:
    return f"line {first}" if first == last else f"lines {first}-{last}"


def _read_two_files(source: Path, target: Path) -> ParallelCorpus:
    src = _read_lines(source)
    tgt = _read_lines(target)
    if len(src) != len(tgt):
        longer, shorter = (source, target) if len(src) > len(tgt) else (target, source)
        n_short, n_long = sorted((len(src), len(tgt)))
        raise DataError(
            f"{source} has {len(src)} lines but {target} has {len(tgt)}: "
            f"{_line_span(n_short + 1, n_long)} of {longer} "
            f"{'has' if n_long == n_short + 1 else 'have'} no partner in {shorter}; "
            f"the two files must be line-aligned (line i of one translates line i of the other), "
            f"so remove the extra lines or add the missing translations"
        )
    name = source.name
    where = [f"{name}:{i}" for i in range(1, len(src) + 1)]
    return ParallelCorpus(src=src, tgt=tgt, where=where)


def _read_tsv(path: Path) -> ParallelCorpus:
    src: list[str] = []
    tgt: list[str] = []
    where: list[str] = []
    for lineno, line in enumerate(_read_lines(path), start=1):
        if line == "":  # a blank line is an empty pair: filter_pairs drops and reports it
            s, t = "", ""
        else:
            n_tabs = line.count("\t")
            if n_tabs != 1:
                raise DataError(
                    f"{path}:{lineno}: expected source<TAB>target (exactly one tab), found "
                    f"{n_tabs} tabs; fix that line (a tab inside a sentence must be replaced by a "
                    f"space) or give the two languages as two line-aligned files"
                )
            s, t = line.split("\t")
        src.append(s)
        tgt.append(t)
        where.append(f"{path.name}:{lineno}")
    return ParallelCorpus(src=src, tgt=tgt, where=where)


def _field(record: dict, name: str, path: Path, lineno: int, shown: str, example: str) -> str:
    if name not in record:
        keys = ", ".join(repr(k) for k in list(record)[:10]) or "none"
        raise DataError(
            f"{path}:{lineno}: record has no field {shown!r} (fields: {keys}); each record must "
            f"look like {example}, or set src_field/tgt_field to the fields holding the two sides"
        )
    value = record[name]
    if not isinstance(value, str):
        raise DataError(
            f"{path}:{lineno}: field {shown!r} must be a string, got {type(value).__name__}; "
            f"fix the record or choose other src_field/tgt_field"
        )
    return value


def _read_jsonl(path: Path, src_field: str, tgt_field: str) -> ParallelCorpus:
    src: list[str] = []
    tgt: list[str] = []
    where: list[str] = []
    flat_example = f'{{"{src_field}": "...", "{tgt_field}": "..."}}'
    hf_example = f'{{"translation": {{"{src_field}": "...", "{tgt_field}": "..."}}}}'
    for lineno, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue  # blank lines hold no record
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno}); each line of a "
                f".jsonl file must be one JSON object like {flat_example}"
            ) from None
        if not isinstance(record, dict):
            raise DataError(
                f"{path}:{lineno}: expected a JSON object like {flat_example}, "
                f"got {type(record).__name__}"
            )
        if src_field not in record and tgt_field not in record and "translation" in record:
            inner = record["translation"]
            if not isinstance(inner, dict):
                raise DataError(
                    f"{path}:{lineno}: field 'translation' must be an object like "
                    f'{{"{src_field}": "...", "{tgt_field}": "..."}}, got {type(inner).__name__}'
                )
            s = _field(inner, src_field, path, lineno, f"translation.{src_field}", hf_example)
            t = _field(inner, tgt_field, path, lineno, f"translation.{tgt_field}", hf_example)
        else:
            s = _field(record, src_field, path, lineno, src_field, flat_example)
            t = _field(record, tgt_field, path, lineno, tgt_field, flat_example)
        src.append(s)
        tgt.append(t)
        where.append(f"{path.name}:{lineno}")
    return ParallelCorpus(src=src, tgt=tgt, where=where)


def read_parallel(
    source: PathLike,
    target: PathLike | None = None,
    *,
    fmt: str = "auto",
    src_field: str = "src",
    tgt_field: str = "tgt",
) -> ParallelCorpus:
    """Read sentence pairs from two line-aligned files, or one TSV or JSONL file.

    * ``source`` and ``target`` given (``fmt`` "auto" or "lines"): line i of ``source``
      translates line i of ``target``; both may be ``.gz``. Different line counts are a
      DataError naming the lines without a partner.
    * only ``source``, ``fmt="tsv"`` or a ``.tsv(.gz)`` file: ``src<TAB>tgt`` per line.
    * only ``source``, ``fmt="jsonl"`` or a ``.jsonl(.gz)`` file: one object per line with
      string fields ``src_field`` and ``tgt_field``, or ``{"translation": {src_field: ...,
      tgt_field: ...}}`` (Hugging Face datasets; the fields are then language codes).

    Trailing ``\\n``/``\\r`` are removed; nothing else is stripped. Empty sentences are kept
    (:func:`filter_pairs` drops and reports them), but a corpus without any pair is an error.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown parallel data format {fmt!r}; use one of {', '.join(FORMATS)}")
    src_path = _as_path(source)
    if target is not None:
        if fmt not in ("auto", "lines"):
            raise ConfigError(
                f"format {fmt!r} holds both languages in one file, but a target file was given "
                f"too ({os.fspath(target)}); drop the target file, or use fmt='lines' for two "
                f"line-aligned files"
            )
        tgt_path = _as_path(target)
        corpus = _read_two_files(src_path, tgt_path)
        what = f"{src_path} and {tgt_path}"
    else:
        if fmt == "auto":
            inner = _inner_suffix(src_path)
            fmt = {".tsv": "tsv", ".jsonl": "jsonl"}.get(inner, "")
            if not fmt:
                raise ConfigError(
                    f"cannot tell how {src_path} holds sentence pairs: give the target-language "
                    f"file too (two line-aligned files), or use a .tsv / .jsonl file, or set "
                    f"fmt='tsv' or fmt='jsonl'"
                )
        if fmt == "lines":
            raise ConfigError(
                f"fmt='lines' needs two line-aligned files, but only {src_path} was given; "
                f"pass the target-language file as well"
            )
        if not src_path.exists():
            raise DataError(f"data file {str(src_path)!r} does not exist; check the spelling of the path")
        corpus = _read_tsv(src_path) if fmt == "tsv" else _read_jsonl(src_path, src_field, tgt_field)
        what = str(src_path)
    if len(corpus) == 0:
        raise DataError(f"no sentence pairs found in {what} (empty); add data or point at other files")
    return corpus


_LANG = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})?$")
# suffixes that look like language codes but are file types
_NOT_LANGS = frozenset(
    {"txt", "md", "rst", "tsv", "csv", "py", "json", "xml", "htm", "tex", "bin", "npy", "npz",
     "pt", "log", "cfg", "ini", "yml", "sh", "gz", "zip", "tar", "bz2", "xz", "zst", "pkl", "lock"}
)


def _split_lang_files(data_dir: Path) -> dict[tuple[str, str], Path]:
    """``{(split, lang): path}`` for the ``{split}.{lang}(.gz)`` files in ``data_dir``;
    an uncompressed file wins over its ``.gz`` twin."""
    found: dict[tuple[str, str], Path] = {}
    for p in sorted(data_dir.iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        name = p.name[:-3] if p.name.lower().endswith(".gz") else p.name
        split, dot, lang = name.rpartition(".")
        if not dot or not split or not _LANG.match(lang) or lang.lower() in _NOT_LANGS:
            continue
        key = (split, lang)
        if key not in found or found[key].name.lower().endswith(".gz"):
            found[key] = p
    return found


def language_files(data_dir: PathLike, split: str, src_lang: str, tgt_lang: str) -> tuple[Path, Path]:
    """The ``({split}.{src_lang}, {split}.{tgt_lang})`` files (each maybe ``.gz``) in ``data_dir``.

    When both ``name`` and ``name.gz`` exist the uncompressed file is used. A missing language
    or split is a ConfigError listing the languages and splits the directory does have.
    """
    d = _as_path(data_dir)
    if not d.is_dir():
        raise DataError(
            f"data directory {str(d)!r} does not exist or is not a directory; check the path "
            f"(it should hold files like train.en.gz and train.de.gz)"
        )
    if src_lang == tgt_lang:
        raise ConfigError(
            f"source and target language are both {src_lang!r}; choose two different languages"
        )
    found = _split_lang_files(d)
    out = []
    for lang in (src_lang, tgt_lang):
        path = found.get((split, lang))
        if path is None:
            langs = sorted({lg for _, lg in found})
            splits = sorted({sp for sp, _ in found})
            if found:
                have = f"it has languages {', '.join(langs)} for splits {', '.join(splits)}"
            else:
                have = "it holds no {split}.{lang} or {split}.{lang}.gz files at all"
            raise ConfigError(
                f"no {split}.{lang}(.gz) in {d}: {have}; choose one of those languages and "
                f"splits, or add the file"
            )
        out.append(path)
    return out[0], out[1]


# --------------------------------------------------------------------------------------------
# Filtering
# --------------------------------------------------------------------------------------------


@dataclass
class FilterReport:
    """What :func:`filter_pairs` kept and dropped. Each dropped pair is counted once, under the
    first reason that applies (empty, then too long, then bad ratio); ``examples`` holds the
    locations of the first few dropped pairs."""

    kept: int
    empty: int
    too_long: int
    bad_ratio: int
    examples: list[str] = field(default_factory=list)
    max_len: int = 0
    max_ratio: float = 0.0

    @property
    def total(self) -> int:
        return self.kept + self.dropped

    @property
    def dropped(self) -> int:
        return self.empty + self.too_long + self.bad_ratio

    def __str__(self) -> str:
        head = f"kept {self.kept:,} of {self.total:,} pairs"
        if self.dropped == 0:
            return f"{head}; dropped none"
        parts = []
        if self.empty:
            parts.append(f"{self.empty:,} empty")
        if self.too_long:
            parts.append(f"{self.too_long:,} longer than {self.max_len:,} tokens")
        if self.bad_ratio:
            parts.append(f"{self.bad_ratio:,} with a length ratio above {self.max_ratio:g}")
        more = ", ..." if self.dropped > len(self.examples) else ""
        eg = f" (e.g. {', '.join(self.examples)}{more})" if self.examples else ""
        return f"{head}; dropped {', '.join(parts)}{eg}"


def filter_pairs(
    src_ids: Sequence[Sequence[int]],
    tgt_ids: Sequence[Sequence[int]],
    where: Sequence[str],
    *,
    max_len: int,
    max_ratio: float,
) -> tuple[list[int], FilterReport]:
    """Indices of the pairs to keep, and a report of the rest.

    Pass the raw token ids (before adding BOS/EOS). A pair is dropped when either side is empty,
    either side has more than ``max_len`` tokens, or ``max(len) / min(len) > max_ratio``
    (``max_ratio <= 0`` turns the ratio check off). Raises DataError when nothing is kept.
    """
    n = len(src_ids)
    if len(tgt_ids) != n or len(where) != n:
        raise DataError(
            f"filter_pairs needs one target and one location per source, got {n} sources, "
            f"{len(tgt_ids)} targets, {len(where)} locations"
        )
    if max_len < 1:
        raise ConfigError(f"max_len must be at least 1 token, got {max_len}")
    kept: list[int] = []
    empty = too_long = bad_ratio = 0
    examples: list[str] = []
    for i in range(n):
        ls, lt = len(src_ids[i]), len(tgt_ids[i])
        if ls == 0 or lt == 0:
            empty += 1
        elif ls > max_len or lt > max_len:
            too_long += 1
        elif max_ratio > 0 and max(ls, lt) / min(ls, lt) > max_ratio:
            bad_ratio += 1
        else:
            kept.append(i)
            continue
        if len(examples) < _MAX_EXAMPLES:
            examples.append(where[i])
    report = FilterReport(kept=len(kept), empty=empty, too_long=too_long, bad_ratio=bad_ratio,
                          examples=examples, max_len=max_len, max_ratio=float(max_ratio))
    if n and not kept:
        raise DataError(
            f"every sentence pair was filtered out: {report}; raise the maximum length or "
            f"length ratio (max_ratio <= 0 turns the ratio check off), or check the data"
        )
    return kept, report


# --------------------------------------------------------------------------------------------
# Batching
# --------------------------------------------------------------------------------------------


class TokenBatches:
    """Batches of pairs of similar length, each with at most ``max_tokens`` padded positions
    per side: ``len(batch) * max(longest source, longest target) <= max_tokens`` (a single pair
    longer than that forms a batch of its own).

    Give the lengths as they will be in the batch tensors (with :func:`collate`: raw length + 1
    on each side, for EOS / BOS). Pairs are sorted by length, ties broken at random by ``seed``,
    and cut greedily; the batches are the same every epoch, and their order is a permutation
    seeded by ``(seed, epoch)`` (or the sorted order when ``shuffle`` is False). ``batch(i)``
    for the global batch counter ``i`` (epoch ``i // len(self)``) is a pure function of the
    lengths, ``max_tokens``, ``seed`` and ``i``, so a resumed run sees the same batches.
    """

    def __init__(self, src_lens: Sequence[int] | np.ndarray, tgt_lens: Sequence[int] | np.ndarray,
                 max_tokens: int, seed: int, shuffle: bool = True) -> None:
        src = np.asarray(src_lens, dtype=np.int64).reshape(-1)  # (N,)
        tgt = np.asarray(tgt_lens, dtype=np.int64).reshape(-1)  # (N,)
        if len(src) != len(tgt):
            raise DataError(f"need one target length per source length, got {len(src)} and {len(tgt)}")
        if len(src) == 0:
            raise DataError("no sentence pairs to batch; check that filtering kept some pairs")
        if int(max_tokens) < 1:
            raise ConfigError(f"max_tokens must be at least 1, got {max_tokens}")
        if int(seed) < 0:
            raise ConfigError(f"seed must be non-negative, got {seed}")
        if int(min(src.min(), tgt.min())) < 1:
            bad = int(np.flatnonzero((src < 1) | (tgt < 1))[0])
            raise DataError(
                f"pair {bad} has a sequence of length {min(src[bad], tgt[bad])}; lengths must be at "
                f"least 1 (count the EOS/BOS token collate adds, and filter empty pairs first)"
            )
        self.src_lens, self.tgt_lens = src, tgt
        self.max_tokens, self.seed, self.shuffle = int(max_tokens), int(seed), bool(shuffle)
        self._batches = self._cut()
        self._perm_epoch = -1
        self._perm = np.arange(len(self._batches))

    def _cut(self) -> list[np.ndarray]:
        src, tgt = self.src_lens, self.tgt_lens
        longest = np.maximum(src, tgt)  # (N,)
        tie = np.random.default_rng([self.seed, 0xB0C7]).random(len(src))  # (N,)
        order = np.lexsort((tie, src + tgt, longest))  # by longest side, then total, then random
        batches: list[np.ndarray] = []
        start, cur = 0, 0
        for pos, i in enumerate(order.tolist()):
            width = max(cur, int(longest[i]))
            if pos > start and (pos - start + 1) * width > self.max_tokens:
                batches.append(order[start:pos].copy())
                start, width = pos, int(longest[i])
            cur = width
        batches.append(order[start:].copy())
        return batches

    def __len__(self) -> int:
        """Batches per epoch."""
        return len(self._batches)

    @property
    def n_pairs(self) -> int:
        return len(self.src_lens)

    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return self._perm
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch, 0xE90C]).permutation(len(self._batches))
            self._perm_epoch = epoch
        return self._perm

    def batch(self, i: int) -> np.ndarray:
        """Pair indices (int64) of global batch ``i``: batch ``i % len(self)`` of epoch ``i // len(self)``."""
        if int(i) < 0:
            raise DataError(f"batch counter must be non-negative, got {i}")
        epoch, pos = divmod(int(i), len(self._batches))
        return self._batches[int(self._order(epoch)[pos])].copy()

    def tokens(self, i: int) -> int:
        """Real (non-padding) tokens in global batch ``i``, source and target together."""
        idx = self.batch(i)
        return int(self.src_lens[idx].sum() + self.tgt_lens[idx].sum())

    def padding_fraction(self) -> float:
        """Padded positions / all positions over one epoch, source and target together."""
        real = positions = 0
        for idx in self._batches:
            s, t = self.src_lens[idx], self.tgt_lens[idx]
            real += int(s.sum() + t.sum())
            positions += len(idx) * int(s.max() + t.max())
        return 1.0 - real / positions


def collate(
    src_ids: Sequence[Sequence[int]],
    tgt_ids: Sequence[Sequence[int]],
    *,
    pad_id: int,
    bos_id: int,
    eos_id: int,
) -> dict[str, torch.Tensor]:
    """Pad a batch of raw token-id pairs into model inputs (all ``long`` unless noted):

    * ``src``      (B, S): source + [eos], padded with ``pad_id``
    * ``src_mask`` (B, S) bool: True at real source tokens
    * ``tgt_in``   (B, T): [bos] + target, padded with ``pad_id`` (decoder input)
    * ``tgt_out``  (B, T): target + [eos], padded with -100 (labels; -100 is ignored by the loss)
    * ``tgt_mask`` (B, T) bool: True at real ``tgt_in`` positions
    """
    if len(src_ids) != len(tgt_ids):
        raise DataError(f"collate needs one target per source, got {len(src_ids)} and {len(tgt_ids)}")
    if len(src_ids) == 0:
        raise DataError("collate got an empty batch; a batch needs at least one pair")
    b = len(src_ids)
    s_len = [len(x) + 1 for x in src_ids]
    t_len = [len(y) + 1 for y in tgt_ids]
    s_max, t_max = max(s_len), max(t_len)
    src = torch.full((b, s_max), pad_id, dtype=torch.long)  # (B, S)
    tgt_in = torch.full((b, t_max), pad_id, dtype=torch.long)  # (B, T)
    tgt_out = torch.full((b, t_max), IGNORE_INDEX, dtype=torch.long)  # (B, T)
    for r, (x, y) in enumerate(zip(src_ids, tgt_ids)):
        x = torch.as_tensor(list(x), dtype=torch.long)
        y = torch.as_tensor(list(y), dtype=torch.long)
        src[r, : len(x)] = x
        src[r, len(x)] = eos_id
        tgt_in[r, 0] = bos_id
        tgt_in[r, 1 : len(y) + 1] = y
        tgt_out[r, : len(y)] = y
        tgt_out[r, len(y)] = eos_id
    src_mask = torch.arange(s_max)[None, :] < torch.tensor(s_len)[:, None]  # (B, S)
    tgt_mask = torch.arange(t_max)[None, :] < torch.tensor(t_len)[:, None]  # (B, T)
    return {"src": src, "src_mask": src_mask, "tgt_in": tgt_in, "tgt_out": tgt_out, "tgt_mask": tgt_mask}


__all__ = [
    "FilterReport",
    "IGNORE_INDEX",
    "ParallelCorpus",
    "TokenBatches",
    "collate",
    "filter_pairs",
    "language_files",
    "read_parallel",
]
