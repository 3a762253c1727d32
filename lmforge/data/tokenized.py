"""Tokenise a corpus once and cache it as a memory-mapped array, split into train and validation.

The cache lives in ``cache_dir`` as ``tokens-<key>.bin`` (the raw token ids, train then val)
plus ``tokens-<key>.json`` (counts, dtype, split point, sources). The key hashes the tokenizer,
every input file's resolved path, size and mtime, the text field, the separator id and the
validation fraction, so changing any of them re-tokenises and nothing else does.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Union

import numpy as np
from tokenizers import Tokenizer

from ..errors import ConfigError, DataError, TokenizerError
from ..files.atomic import atomic_write
from ..files.text import list_files, read_documents
from ..tokenizers.encode import can_chunk, chunk_text, encode_stream  # noqa: F401 (re-exported)

PathLike = Union[str, "os.PathLike[str]"]

_FORMAT = 1
_NEWLINE_SEARCH = 10_000  # how far the train/val split may move forward to reach a line start


@dataclass
class TokenSplits:
    """A tokenised corpus: contiguous train and validation token streams (memory-mapped)."""

    train: np.ndarray  # (N_train,) uint16/uint32 token ids
    val: np.ndarray  # (N_val,) the last val_fraction of the stream
    n_chars: int  # characters of text in the whole corpus (separators not counted)
    n_bytes: int  # UTF-8 bytes of text in the whole corpus
    val_chars: int  # characters of the text that the val tokens encode
    val_bytes: int  # UTF-8 bytes of the text that the val tokens encode
    sources: list[str]  # files that contributed text, in order
    cache_path: str  # the .bin file
    reused: bool = field(default=False)  # True when the cache was reused, not rebuilt

    @property
    def n_tokens(self) -> int:
        return len(self.train) + len(self.val)


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 for vocabularies below 65536 ids, else uint32."""
    return np.dtype(np.uint16) if vocab_size < 65536 else np.dtype(np.uint32)


def _cache_key(files: list[Path], tokenizer_json: str, text_field: str, eos_id: int | None, val_fraction: float) -> str:
    stats = []
    for f in files:
        st = f.stat()
        stats.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
    blob = json.dumps(
        {
            "format": _FORMAT,
            "tokenizer": hashlib.sha256(tokenizer_json.encode("utf-8")).hexdigest(),
            "files": stats,
            "text_field": text_field,
            "eos_id": eos_id,
            "val_fraction": val_fraction,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


def _with_file(path: Path, write) -> None:
    with open(path, "wb") as f:
        write(f)


def _split_documents(texts: list[str], val_fraction: float) -> tuple[list[str], list[str], bool]:
    """Split the concatenated text at ``floor((1 - val_fraction) * n_chars)``, moved to a line start.

    Returns (train_pieces, val_pieces, split_at_document_boundary).
    """
    n_chars = sum(len(t) for t in texts)
    # (the small epsilon keeps e.g. (1 - 0.25) * 68 from flooring to 50.999... -> 50)
    split = n_chars if val_fraction <= 0 else math.floor((1.0 - val_fraction) * n_chars + 1e-6)
    acc = 0
    for k, text in enumerate(texts):
        if acc + len(text) > split:
            local = split - acc
            if local > 0 and text[local - 1] != "\n":
                nl = text.find("\n", local, local + _NEWLINE_SEARCH)
                # move to the next line start, unless that would leave no validation text
                if 0 <= nl and (nl + 1 < len(text) or k + 1 < len(texts)):
                    local = nl + 1
            if local == len(text):  # the split fell on the end of this document
                k, local = k + 1, 0
                text = texts[k]
            train = texts[:k] + ([text[:local]] if local > 0 else [])
            val = [text[local:]] + texts[k + 1 :]
            return train, val, local == 0 and k > 0
        acc += len(text)
    return list(texts), [], False


def _build(
    paths: PathLike | Iterable[PathLike],
    tokenizer: Tokenizer,
    text_field: str,
    eos_id: int | None,
    val_fraction: float,
    bin_path: Path,
    meta_path: Path,
    dtype: np.dtype,
    key: str,
) -> dict:
    docs = list(read_documents(paths, text_field))
    texts = [d.text for d in docs]
    sources = list(dict.fromkeys(d.source for d in docs))
    train_pieces, val_pieces, boundary = _split_documents(texts, val_fraction)
    chunk = can_chunk(tokenizer)
    counts = {"train": 0, "val": 0}

    def write(f) -> None:
        for name, pieces, leading in (("train", train_pieces, False), ("val", val_pieces, boundary)):
            for ids in encode_stream(tokenizer, pieces, eos_id, leading_sep=leading, chunk=chunk):
                f.write(ids.astype(dtype).tobytes())
                counts[name] += len(ids)

    atomic_write(bin_path, lambda p: _with_file(p, write))
    meta = {
        "format": _FORMAT,
        "key": key,
        "dtype": dtype.name,
        "n_tokens": counts["train"] + counts["val"],
        "n_train_tokens": counts["train"],
        "n_val_tokens": counts["val"],
        "n_chars": sum(len(t) for t in texts),
        "n_bytes": sum(len(t.encode("utf-8")) for t in texts),
        "val_chars": sum(len(t) for t in val_pieces),
        "val_bytes": sum(len(t.encode("utf-8")) for t in val_pieces),
        "val_fraction": val_fraction,
        "eos_id": eos_id,
        "text_field": text_field,
        "sources": sources,
    }
    atomic_write(meta_path, lambda p: p.write_text(json.dumps(meta, indent=1), encoding="utf-8"))
    return meta


def _load_meta(bin_path: Path, meta_path: Path, key: str) -> dict | None:
    """The sidecar of a complete, matching cache entry, or None."""
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        itemsize = np.dtype(meta["dtype"]).itemsize
        ok = meta.get("format") == _FORMAT and meta.get("key") == key
        if ok and bin_path.stat().st_size == meta["n_tokens"] * itemsize:
            return meta
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def build_token_splits(
    paths: PathLike | Iterable[PathLike],
    tokenizer: Tokenizer,
    cache_dir: PathLike,
    val_fraction: float = 0.1,
    text_field: str = "text",
    eos_id: int | None = None,
) -> TokenSplits:
    """Tokenise the documents in ``paths`` (or reuse the cache) and split off the last ``val_fraction``.

    The split is made in the text: at character ``floor((1 - val_fraction) * n_chars)`` of the
    concatenated documents, moved forward to the next line start when one is near, and the two
    parts are tokenised separately, so ``val_chars``/``val_bytes`` are exact. Documents are
    separated by ``eos_id`` when given. ``val_fraction=0`` gives an empty validation split.
    """
    if not isinstance(val_fraction, (int, float)) or not 0.0 <= val_fraction < 1.0:
        raise ConfigError(
            f"val_fraction must be at least 0 and below 1 (for example 0.1), got {val_fraction!r}"
        )
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    if eos_id is not None and not 0 <= eos_id < vocab_size:
        raise TokenizerError(
            f"eos_id {eos_id} is outside the tokenizer's vocabulary (0..{vocab_size - 1}); "
            f"pass the id of its end-of-text token or None"
        )
    dtype = token_dtype(vocab_size)
    files = [f for _, fs in list_files(paths) for f in fs]
    key = _cache_key(files, tokenizer.to_str(), text_field, eos_id, float(val_fraction))
    cache = Path(os.path.expanduser(os.fspath(cache_dir)))
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create cache directory {str(cache)!r} ({e.strerror or e}); choose a writable one") from None
    bin_path, meta_path = cache / f"tokens-{key}.bin", cache / f"tokens-{key}.json"

    meta = _load_meta(bin_path, meta_path, key)
    reused = meta is not None
    if meta is None:
        meta = _build(paths, tokenizer, text_field, eos_id, float(val_fraction), bin_path, meta_path, dtype, key)

    n_train = meta["n_train_tokens"]
    if meta["n_tokens"] > 0:
        tokens = np.memmap(bin_path, dtype=np.dtype(meta["dtype"]), mode="r", shape=(meta["n_tokens"],))
    else:  # numpy cannot map an empty file
        tokens = np.zeros(0, dtype=np.dtype(meta["dtype"]))
    return TokenSplits(
        train=tokens[:n_train],
        val=tokens[n_train:],
        n_chars=meta["n_chars"],
        n_bytes=meta["n_bytes"],
        val_chars=meta["val_chars"],
        val_bytes=meta["val_bytes"],
        sources=list(meta["sources"]),
        cache_path=str(bin_path),
        reused=reused,
    )
