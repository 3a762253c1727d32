"""Parallel text (sentence pairs) for machine translation with an encoder-decoder model.

Reading
    :func:`read_parallel` reads a corpus of (source, target) sentence pairs from two
    line-aligned files (``train.en`` / ``train.de``, optionally ``.gz``), one TSV file
    (``src<TAB>tgt`` per line) or one JSONL file (``{"src": ..., "tgt": ...}`` records, or
    Hugging Face style ``{"translation": {"en": ..., "de": ...}}``). Every pair remembers where
    it came from (``"train.en:17"``) so later reports can point at it.
    :func:`language_files` finds ``{split}.{lang}(.gz)`` files in a directory (Multi30k layout).

Filtering and batching the pairs once tokenised is :mod:`lmforge.data.pair_batches`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Union


from ..errors import ConfigError, DataError
from ..files.text import _inner_suffix, jsonl_objects, read_text_file, string_field

PathLike = Union[str, "os.PathLike[str]"]

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
    return string_field(record, name, f"{path}:{lineno}",
                        f"each record must look like {example}, or set src_field/tgt_field to "
                        "the fields holding the two sides",
                        "fix the record or choose other src_field/tgt_field", shown)


def _read_jsonl(path: Path, src_field: str, tgt_field: str) -> ParallelCorpus:
    src: list[str] = []
    tgt: list[str] = []
    where: list[str] = []
    flat_example = f'{{"{src_field}": "...", "{tgt_field}": "..."}}'
    hf_example = f'{{"translation": {{"{src_field}": "...", "{tgt_field}": "..."}}}}'
    for lineno, record in jsonl_objects(path, flat_example, _read_lines(path)):
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


__all__ = ["FORMATS", "ParallelCorpus", "language_files", "read_parallel"]
