"""Labelled text for classification: CSV, TSV, JSONL and ``label<space>text`` lines.

:func:`read_labeled` reads one file into a :class:`LabeledData` (texts, an optional second
text per row for sentence pairs, label strings, and each row's number in the file). Every bad
row raises :class:`~lmforge.errors.DataError` naming the file, the row and the column:

    reviews.csv: row 7, column 'text': the text is empty; ...

Rows are numbered as a person finds them: the line number for JSONL and ``label text`` files,
the spreadsheet row for CSV/TSV (the header is row 1, the first record row 2).

:class:`LabelVocab` maps label strings to class ids; it is built from the training split (or
given explicitly), and :meth:`LabelVocab.encode` refuses labels of other splits it does not
know, again naming file, row and column.

Formats (``format = "auto"`` picks by extension, a trailing ``.gz`` ignored):

=============  ============================  ==========================================
format         auto for                      layout
=============  ============================  ==========================================
``csv``        ``.csv``                      header row names the columns
``tsv``        ``.tsv``                      same, tab-separated
``jsonl``      ``.jsonl``                    one JSON object a line; labels str or int
``text``       ``.txt``                      one text a line, no labels
``label-text`` anything else (SST's files)   ``label<space>text`` a line (stsa.binary.*)
=============  ============================  ==========================================
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal, Sequence

import numpy as np

from ..errors import ConfigError, DataError
from ..files.text import _inner_suffix, jsonl_objects, read_text_file

Format = Literal["auto", "csv", "tsv", "jsonl", "text", "label-text"]
FORMATS: tuple[str, ...] = ("auto", "csv", "tsv", "jsonl", "text", "label-text")
_BY_SUFFIX = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".txt": "text"}
# the two columns of a ``label<space>text`` line, as error messages name them
LINE_LABEL, LINE_TEXT = "label", "text"


@dataclass
class LabeledData:
    """One split: ``texts[i]`` (and ``pairs[i]``) with label ``labels[i]`` at ``rows[i]``."""

    path: str
    texts: list[str]
    labels: list[str] | None  # None when the file has no labels
    rows: list[int]
    pairs: list[str] | None = None  # second texts (sentence-pair tasks)
    label_column: str = "label"

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx: Sequence[int]) -> "LabeledData":
        pick = lambda xs: None if xs is None else [xs[i] for i in idx]  # noqa: E731
        return LabeledData(self.path, pick(self.texts), pick(self.labels), pick(self.rows),
                           pick(self.pairs), self.label_column)

    def sample(self, n: int, seed: int) -> "LabeledData":
        """A seeded random sample of ``n`` rows in file order (all rows when ``n`` is 0 or
        at least the size)."""
        if n <= 0 or n >= len(self):
            return self
        idx = np.sort(np.random.default_rng([seed, n]).choice(len(self), n, replace=False))
        return self.subset(idx.tolist())

    def split(self, fraction: float, seed: int) -> tuple["LabeledData", "LabeledData"]:
        """(rest, held out): a seeded random ``fraction`` of the rows held out."""
        n_out = int(round(len(self) * fraction))
        if n_out < 1 or n_out >= len(self):
            raise DataError(f"{self.path}: cannot hold out {fraction:g} of {len(self)} rows; "
                            "give a separate dev file or change the fraction")
        perm = np.random.default_rng([seed, 0x0DE7]).permutation(len(self))
        rest, held = np.sort(perm[n_out:]).tolist(), np.sort(perm[:n_out]).tolist()
        return self.subset(rest), self.subset(held)


def detect_format(path: str | Path, fmt: str = "auto") -> str:
    if fmt not in FORMATS:
        raise ConfigError(f"data format {fmt!r} is unknown; choose one of {', '.join(FORMATS)}")
    if fmt != "auto":
        return fmt
    return _BY_SUFFIX.get(_inner_suffix(Path(path)), "label-text")


def _bad(path, row: int, column: str, problem: str) -> DataError:
    return DataError(f"{path}: row {row}, column {column!r}: {problem}")


def _label_value(value, path, row: int, column: str) -> str:
    """A label cell as a string: strings (stripped) and integers are labels, nothing else."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        raise _bad(path, row, column, "the label is empty; every row needs a label")
    raise _bad(path, row, column, f"a label must be a string or an integer, got "
               f"{type(value).__name__} {value!r}")


def _text_value(value, path, row: int, column: str) -> str:
    if not isinstance(value, str):
        raise _bad(path, row, column, f"the text must be a string, got {type(value).__name__} "
                   f"{value!r}; fix the row or choose another text column")
    if not value.strip():
        raise _bad(path, row, column, "the text is empty; remove the row or fill it in")
    return value


def _records(path: Path, fmt: str, columns: list[str]) -> Iterator[tuple[int, dict]]:
    """(row number, record) for each non-blank row of a CSV/TSV/JSONL file; checks that the
    ``columns`` exist (CSV/TSV: in the header; JSONL: in every record)."""
    text = read_text_file(path)
    if fmt == "jsonl":
        example = "{" + ", ".join(f'"{c}": ...' for c in columns) + "}"
        for lineno, rec in jsonl_objects(path, example, text.split("\n"), "{path}: row {lineno}"):
            for col in columns:
                if col not in rec:
                    found = ", ".join(repr(k) for k in list(rec)[:20]) or "none"
                    raise _bad(path, lineno, col, f"the record has no such field (fields found: "
                               f"{found}); set the column name to one of them")
            yield lineno, rec
        return
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="," if fmt == "csv" else "\t")
    try:
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: the file is empty; a {fmt.upper()} file needs a header row "
                            "naming its columns")
        header = [h.strip() for h in header]
        for col in columns:
            if col not in header:
                found = ", ".join(repr(h) for h in header)
                raise DataError(f"{path}: row 1 (header), column {col!r}: no such column "
                                f"(columns found: {found}); set the column name to one of them")
        for row, cells in enumerate(reader, start=2):
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                raise DataError(f"{path}: row {row}: {len(cells)} cells, but the header names "
                                f"{len(header)} columns; quote cells that contain the delimiter")
            yield row, dict(zip(header, cells))
    except csv.Error as e:
        raise DataError(f"{path}: row {reader.line_num}: not valid {fmt.upper()} ({e})") from None


def read_labeled(path: str | Path, *, fmt: str = "auto", text_column: str = "text",
                 label_column: str | None = "label", pair_column: str | None = None,
                 labels: Literal["required", "optional", "none"] = "required") -> LabeledData:
    """Read labelled (or unlabelled) texts from one file; see the module doc for formats.

    ``labels``: ``required`` = every row needs a label; ``optional`` = use the label column
    when the file has one (CSV/TSV header, first JSONL record), else no labels; ``none`` =
    ignore labels. ``pair_column`` names a second text column (CSV/TSV/JSONL only).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist" +
                        ("; it is a directory, give a file" if path.is_dir() else ""))
    fmt = detect_format(path, fmt)
    if labels not in ("required", "optional", "none"):
        raise ConfigError(f"labels must be required, optional or none, got {labels!r}")
    want_labels = labels != "none" and label_column is not None
    if fmt in ("text", "label-text"):
        if pair_column:
            raise ConfigError(f"{path}: text pairs need a CSV, TSV or JSONL file with a "
                              f"{pair_column!r} column; the {fmt} format has one text a line")
        if fmt == "text" and labels == "required":
            raise DataError(f"{path}: a .txt file is read as one unlabelled text a line; give "
                            "labels as CSV/TSV/JSONL, or as 'label text' lines (format label-text)")
        return _read_lines(path, fmt == "label-text" and want_labels, fmt == "label-text")
    if want_labels and labels == "optional" and not _has_column(path, fmt, label_column):
        want_labels = False
    columns = [text_column] + ([pair_column] if pair_column else []) + \
        ([label_column] if want_labels else [])
    texts, pairs, labs, rows = [], [] if pair_column else None, [] if want_labels else None, []
    for row, rec in _records(path, fmt, columns):
        texts.append(_text_value(rec[text_column], path, row, text_column))
        if pairs is not None:
            pairs.append(_text_value(rec[pair_column], path, row, pair_column))
        if labs is not None:
            labs.append(_label_value(rec[label_column], path, row, label_column))
        rows.append(row)
    if not texts:
        raise DataError(f"{path}: no rows found; the file holds no data")
    return LabeledData(str(path), texts, labs, rows, pairs, label_column or "label")


def _has_column(path: Path, fmt: str, column: str) -> bool:
    """Whether the header (CSV/TSV) or the first record (JSONL) has ``column``."""
    try:
        _, rec = next(_records(path, fmt, []))
    except StopIteration:
        return False
    return column in rec


def _read_lines(path: Path, keep_labels: bool, labelled: bool) -> LabeledData:
    """``label<space>text`` lines (``labelled``) or one text a line."""
    texts, labs, rows = [], [] if keep_labels else None, []
    for lineno, line in enumerate(read_text_file(path).split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        if labelled:
            label, _, text = line.strip().partition(" ")
            if not text.strip():
                raise _bad(path, lineno, LINE_TEXT, f"the text is empty (the line is just "
                           f"{label!r}); each line must be 'label text'")
            if labs is not None:
                labs.append(label)
        else:
            text = line
        texts.append(text.strip())
        rows.append(lineno)
    if not texts:
        raise DataError(f"{path}: no rows found; the file holds no data")
    return LabeledData(str(path), texts, labs, rows, None, LINE_LABEL)


def _sort_key(label: str):
    """Integers in numeric order, then everything else alphabetically."""
    try:
        return 0, int(label), ""
    except ValueError:
        return 1, 0, label


@dataclass
class LabelVocab:
    """Class names in class-id order."""

    labels: list[str]
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.labels = [str(x) for x in self.labels]
        dup = [k for k, n in Counter(self.labels).items() if n > 1]
        if dup:
            raise ConfigError(f"the label list names {dup[0]!r} twice; each class once")
        if len(self.labels) < 2:
            raise DataError(f"classification needs at least 2 classes, got {self.labels}")
        self.index = {lab: i for i, lab in enumerate(self.labels)}

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def build(cls, train: LabeledData, explicit: Sequence[str] | None = None) -> "LabelVocab":
        """The classes of the training split: ``explicit`` (in that order; each must have a
        training example) or the labels seen (integers numerically, others alphabetically)."""
        if train.labels is None:
            raise DataError(f"{train.path}: the training file has no labels")
        seen = Counter(train.labels)
        if not explicit:
            if len(seen) < 2:
                raise DataError(f"{train.path}: column {train.label_column!r}: every row has the "
                                f"label {next(iter(seen))!r}; classification needs at least 2 "
                                "classes")
            return cls(sorted(seen, key=_sort_key))
        vocab = cls(list(explicit))
        vocab.encode(train)  # training labels outside the explicit list are errors too
        empty = [lab for lab in vocab.labels if lab not in seen]
        if empty:
            raise DataError(f"{train.path}: column {train.label_column!r}: class {empty[0]!r} has "
                            f"no training examples (labels given: {', '.join(vocab.labels)}); "
                            "add examples or drop it from the label list")
        return vocab

    def encode(self, data: LabeledData) -> np.ndarray:
        """Class ids (N,) of a split's labels; an unknown label names file, row and column."""
        if data.labels is None:
            raise DataError(f"{data.path}: the file has no labels (column {data.label_column!r})")
        out = np.empty(len(data.labels), dtype=np.int64)
        for i, lab in enumerate(data.labels):
            k = self.index.get(lab)
            if k is None:
                raise _bad(data.path, data.rows[i], data.label_column,
                           f"label {lab!r} is not one of the training labels "
                           f"({', '.join(self.labels)}); fix the row or the label column")
            out[i] = k
        return out

    def counts(self, ids: np.ndarray) -> np.ndarray:
        return np.bincount(ids, minlength=len(self))
