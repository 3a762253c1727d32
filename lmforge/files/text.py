"""Reading text: files, directories, JSONL records and gzip, with one clear error per bad file
(binary, non-UTF-8 with the line and byte offset, empty). A leaf below every other layer.

Every data path in lmforge goes through :func:`read_documents`, so a missing file, a binary
file, a file that is not UTF-8 or a malformed JSONL line always gives the same
:class:`~lmforge.errors.DataError` naming the file (and line) and saying how to fix it.
"""

from __future__ import annotations

import gzip
import zlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Union

from ..errors import DataError

PathLike = Union[str, "os.PathLike[str]"]

#: Extensions read as plain text when scanning a directory (a trailing ``.gz`` is allowed).
TEXT_EXTENSIONS: frozenset[str] = frozenset(
    {".txt", ".text", ".md", ".rst", ".py", ".json", ".csv", ".tsv", ".html", ".htm", ".tex", ".xml"}
)
#: Extensions read as JSON Lines (one JSON object a line).
JSONL_EXTENSIONS: frozenset[str] = frozenset({".jsonl"})
_SKIP_DIRS = frozenset({"__pycache__"})
_BINARY_SNIFF_BYTES = 8192


@dataclass(frozen=True)
class Document:
    """One document: where it came from (a file path) and its text."""

    source: str
    text: str


def _inner_suffix(path: Path) -> str:
    """The extension that says what a file holds, ignoring a trailing ``.gz`` (lower case)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def is_jsonl(path: Path) -> bool:
    """True for ``.jsonl`` and ``.jsonl.gz`` files."""
    return _inner_suffix(path) in JSONL_EXTENSIONS


def _wanted_in_directory(path: Path) -> bool:
    """Whether a file found while scanning a directory should be read."""
    if path.name.startswith("."):
        return False
    suffix = _inner_suffix(path)
    if suffix in TEXT_EXTENSIONS or suffix in JSONL_EXTENSIONS:
        return True
    if suffix == "" and path.suffix.lower() != ".gz":
        # No extension (README, LICENSE, ...): read it unless it is obviously binary.
        try:
            with open(path, "rb") as f:
                return b"\0" not in f.read(_BINARY_SNIFF_BYTES)
        except OSError:
            return False
    return False


def _as_path_list(paths: PathLike | Iterable[PathLike]) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out = [Path(os.path.expanduser(os.fspath(p))) for p in paths]
    if not out:
        raise DataError("no data paths given: pass at least one text file, directory or JSONL file")
    return out


def _scan_directory(root: Path) -> list[Path]:
    """Files under ``root`` that look like text, sorted by relative path; hidden entries skipped."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS]
        for name in filenames:
            p = Path(dirpath) / name
            if p.is_file() and _wanted_in_directory(p):
                found.append(p)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def list_files(paths: PathLike | Iterable[PathLike]) -> list[tuple[Path, list[Path]]]:
    """Expand each given path into the files it stands for: ``[(given_path, [files...]), ...]``.

    Raises DataError when a path does not exist or a directory holds no text files.
    """
    out: list[tuple[Path, list[Path]]] = []
    for p in _as_path_list(paths):
        if not p.exists():
            raise DataError(
                f"data path {str(p)!r} does not exist; check the spelling, or give a text file, "
                f"a directory of text files or a .jsonl file"
            )
        if p.is_dir():
            files = _scan_directory(p)
            if not files:
                raise DataError(
                    f"directory {str(p)!r} holds no readable text files (looked for "
                    f"{', '.join(sorted(TEXT_EXTENSIONS | JSONL_EXTENSIONS))} and files without an "
                    f"extension, skipping hidden ones); put text files there or point at another path"
                )
            out.append((p, files))
        else:
            out.append((p, [p]))
    return out


MAX_DECOMPRESSED = 4 << 30
"""Default bound on the bytes a ``.gz`` file may decompress to (``LMFORGE_MAX_DECOMPRESSED``
raises or lowers it): a small hostile file must not expand into all of memory."""


def max_decompressed() -> int:
    raw = os.environ.get("LMFORGE_MAX_DECOMPRESSED", "")
    try:
        return int(raw) if raw.strip() else MAX_DECOMPRESSED
    except ValueError:
        raise DataError(f"LMFORGE_MAX_DECOMPRESSED={raw!r} is not a number of bytes") from None


def _read_gzip(path: Path) -> bytes:
    limit = max_decompressed()
    chunks, total = [], 0
    with gzip.open(path, "rb") as f:
        while chunk := f.read(1 << 20):  # chunk by chunk: read(limit) would allocate limit
            total += len(chunk)
            if total > limit:
                raise DataError(f"{path}: decompresses to more than {limit} bytes; set "
                                "LMFORGE_MAX_DECOMPRESSED to a larger number of bytes if this "
                                "file is meant to be that large")
            chunks.append(chunk)
    return b"".join(chunks)


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix.lower() == ".gz":
            return _read_gzip(path)
        return path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:  # zlib: a corrupt deflate stream
        raise DataError(
            f"{path}: not a valid gzip file ({e}); re-compress it with `gzip` or remove the .gz suffix"
        ) from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e}); check its permissions") from None


def read_text_file(path: Path) -> str:
    """Read a whole file (``.gz`` allowed) as UTF-8, raising DataError on binary/non-UTF-8 data."""
    data = _read_bytes(path)
    nul = data.find(b"\0")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise DataError(
            f"{path}: looks binary (NUL byte at line {line}, byte offset {nul}); "
            f"give text files only (UTF-8), or convert this file to plain text first"
        )
    if data.startswith(b"\xef\xbb\xbf"):  # UTF-8 byte-order mark
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1)
        raise DataError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{data[e.start]:02x} at byte offset {e.start}, "
            f"column {col}); re-encode the file as UTF-8, for example "
            f"`iconv -f latin1 -t utf-8 {path.name} > fixed.txt`"
        ) from None


def jsonl_objects(path: Path, example: str, lines: list[str] | None = None,
                  where: str = "{path}:{lineno}") -> Iterator[tuple[int, dict]]:
    """(line number, record) for each non-blank line of a JSONL file (``lines``, or the file
    read as UTF-8 text); a line that is not a JSON object is a DataError that names the file
    and line (as ``where`` formats them) and shows ``example``."""
    if lines is None:
        # split on "\n" only: str.splitlines() would also split inside strings at U+2028 etc.
        lines = read_text_file(path).split("\n")
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue  # blank lines hold no record
        at = where.format(path=path, lineno=lineno)
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{at}: not valid JSON ({e.msg} at column {e.colno}); each line of a "
                            f".jsonl file must be one JSON object like {example}") from None
        if not isinstance(record, dict):
            raise DataError(f"{at}: expected a JSON object like {example}, got "
                            f"{type(record).__name__}")
        yield lineno, record


def string_field(record: dict, name: str, at: str, if_missing: str, if_not_string: str,
                 shown: str | None = None) -> str:
    """``record[name]``, a string; a DataError at ``at`` (file:line) naming the field (as
    ``shown``) and the fix (``if_missing`` / ``if_not_string``) otherwise."""
    shown = shown or name
    if name not in record:
        keys = ", ".join(repr(k) for k in list(record)[:10]) or "none"
        raise DataError(f"{at}: record has no field {shown!r} (fields: {keys}); {if_missing}")
    value = record[name]
    if not isinstance(value, str):
        raise DataError(f"{at}: field {shown!r} must be a string, got {type(value).__name__}; "
                        f"{if_not_string}")
    return value


def _read_jsonl(path: Path, text_field: str) -> Iterator[Document]:
    for lineno, record in jsonl_objects(path, f'{{"{text_field}": "..."}}'):
        value = string_field(record, text_field, f"{path}:{lineno}",
                             "set the text field (text_field / data.text_field) to the field "
                             "holding the text",
                             "fix the record or choose another text field")
        if value:
            yield Document(source=str(path), text=value)


def read_file_documents(path: Path, text_field: str = "text") -> Iterator[Document]:
    """Documents of one file: one per JSONL record, or the whole file for a text file."""
    if is_jsonl(path):
        yield from _read_jsonl(path, text_field)
        return
    text = read_text_file(path)
    if text.strip():
        yield Document(source=str(path), text=text)


def read_documents(paths: PathLike | Iterable[PathLike], text_field: str = "text") -> Iterator[Document]:
    """Yield the documents in ``paths`` (files, directories, ``.jsonl``/``.jsonl.gz``), in order.

    Directories are scanned recursively in sorted order; hidden files/directories and
    ``__pycache__`` are skipped, as are empty files inside a directory. Each given path must
    contribute some text, otherwise DataError ("no text found in ...") is raised.
    """
    for given, files in list_files(paths):
        n_docs = 0
        for f in files:
            for doc in read_file_documents(f, text_field):
                n_docs += 1
                yield doc
        if n_docs == 0:
            what = "any file in directory" if given.is_dir() else "file"
            raise DataError(
                f"no text found in {what} {str(given)!r} (it is empty or whitespace only); "
                f"add text to it or point at another path"
            )


def count_chars_bytes(docs: Iterable[Document]) -> tuple[int, int]:
    """Total characters and UTF-8 bytes of the documents' text."""
    n_chars = n_bytes = 0
    for d in docs:
        n_chars += len(d.text)
        n_bytes += len(d.text.encode("utf-8"))
    return n_chars, n_bytes
