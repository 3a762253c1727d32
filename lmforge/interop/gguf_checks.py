"""Checks of a GGUF file's metadata before anything is built from it: the architecture first,
the token list, then the hyper-parameters against the caps of :data:`lmforge.models.MAX_SIZES`
and the shapes of the tensors the import reshapes. Each problem is one error naming the file
and the GGUF key (or tensor); :func:`one_error` turns anything else a broken file makes a
library raise into one :class:`~lmforge.errors.CheckpointError`."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, ConfigError, LMForgeError
from ..models.config import MAX_SIZES
from .gguf_scan import TensorInfo


def one_error(convert):
    """Decorate ``convert(src, ...)``: an exception that is not lmforge's own (a library's
    ValueError, KeyError, RuntimeError, ... on a malformed file) becomes one CheckpointError
    naming ``src``. OSError (the output side: a full disk, permissions) and MemoryError pass."""

    @functools.wraps(convert)
    def wrapper(src, *args, **kwargs):
        try:
            return convert(src, *args, **kwargs)
        except LMForgeError as e:  # name the file when the message does not name it or OUT
            out = args[0] if args else kwargs.get("out_dir", "")
            named = (str(src), str(Path(src).resolve()), str(out) or str(src))
            if any(n in str(e) for n in named):
                raise
            raise type(e)(f"{src}: {e}") from None
        except (OSError, MemoryError):
            raise
        except Exception as e:  # noqa: BLE001 - every parser error of a broken file
            text = " ".join(str(e).split())[:300]
            raise CheckpointError(f"{src}: cannot be converted: the file is malformed "
                                  f"({type(e).__name__}: {text})") from None

    return wrapper


def check_architecture(meta: dict[str, Any], path: Path, supported: Sequence[str]) -> str:
    arch = meta.get("general.architecture")
    if not isinstance(arch, str) or arch not in supported:
        raise ConfigError(f"{path}: GGUF architecture {arch!r} is not supported; supported: "
                          f"{', '.join(supported)}")
    return arch


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_token_list(meta: dict[str, Any], path: Path) -> None:
    """The tokenizer entries the import reads: a token list of strings, token types of the
    same length, merges "a b", string model and pre-tokenizer names."""
    tokens = meta.get("tokenizer.ggml.tokens")
    if tokens is None:
        raise CheckpointError(f"{path}: the GGUF metadata has no tokenizer.ggml.tokens (the "
                              "token list); lmforge imports only files that carry their tokenizer")
    top = MAX_SIZES["vocab_size"]
    if not isinstance(tokens, list) or not tokens or len(tokens) > top \
            or not all(isinstance(t, str) for t in tokens):
        raise CheckpointError(f"{path}: GGUF key tokenizer.ggml.tokens must be a list of 1 to "
                              f"{top} strings")
    types = meta.get("tokenizer.ggml.token_type")
    if types is not None and (not isinstance(types, list) or len(types) != len(tokens)
                              or not all(_is_int(t) for t in types)):
        raise CheckpointError(f"{path}: GGUF key tokenizer.ggml.token_type must be a list of "
                              f"{len(tokens)} integers, one per token")
    merges = meta.get("tokenizer.ggml.merges", [])
    if not isinstance(merges, list) or not all(isinstance(m, str) and " " in m for m in merges):
        raise CheckpointError(f"{path}: GGUF key tokenizer.ggml.merges must be a list of "
                              "strings \"left right\"")
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.pre"):
        if key in meta and not isinstance(meta[key], str):
            raise CheckpointError(f"{path}: GGUF key {key} must be a string, got "
                                  f"{type(meta[key]).__name__}")


class _Keys:
    """Typed, range-checked reads of ``ARCH.key`` entries, every error naming the key."""

    def __init__(self, meta: dict[str, Any], arch: str, path: Path):
        self.meta, self.arch, self.path = meta, arch, path

    def error(self, key: str, why: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: GGUF key {self.arch}.{key} {why}")

    def int(self, key: str, low: int, high: int, default: Any = ...) -> int:
        value = self.meta.get(f"{self.arch}.{key}", default)
        if value is ...:
            raise CheckpointError(f"{self.path}: the GGUF metadata has no {self.arch}.{key}")
        if not _is_int(value) or not low <= value <= high:
            raise self.error(key, f"= {value!r} is out of range; allowed: an integer from {low} "
                                  f"to {high}")
        return value

    def float(self, key: str, high: float, required: bool = False) -> None:
        value = self.meta.get(f"{self.arch}.{key}")
        if value is None and not required:
            return
        if not isinstance(value, (int, float)) or isinstance(value, bool) \
                or not math.isfinite(value) or not 0 < value <= high:
            raise self.error(key, f"= {value!r} is out of range; allowed: a number above 0 and "
                                  f"at most {high:g}")


def check_hparams(meta: dict[str, Any], tensors: list[TensorInfo], path: Path) -> None:
    """The hyper-parameters the import reads, against lmforge's size caps (before any tensor
    is dequantised or any module built), and the shapes of the tensors it reshapes."""
    keys = _Keys(meta, meta["general.architecture"], path)
    keys.int("block_count", 1, MAX_SIZES["n_layer"])
    d = keys.int("embedding_length", 1, MAX_SIZES["d_model"])
    heads = keys.int("attention.head_count", 1, MAX_SIZES["n_head"])
    keys.int("feed_forward_length", 1, MAX_SIZES["d_ff"])
    keys.int("context_length", 1, MAX_SIZES["context_length"])
    kv = meta.get(f"{keys.arch}.attention.head_count_kv", heads)
    if not isinstance(kv, list):  # a per-layer list is refused by the import with its message
        kv = keys.int("attention.head_count_kv", 1, heads, heads)
        if heads % kv:
            raise keys.error("attention.head_count_kv", f"= {kv} must divide "
                                                        f"{keys.arch}.attention.head_count ({heads})")
    if f"{keys.arch}.attention.key_length" in meta:
        head_dim = keys.int("attention.key_length", 2, MAX_SIZES["head_dim"])
    elif d % heads:
        raise keys.error("attention.head_count", f"= {heads} must divide "
                                                 f"{keys.arch}.embedding_length ({d})")
    else:
        head_dim = d // heads
    if head_dim % 2:
        raise keys.error("attention.head_count", f"gives an odd head dimension ({head_dim}); "
                                                 "RoPE needs an even one")
    keys.int("rope.dimension_count", 1, head_dim, head_dim)
    keys.int("rope.scaling.original_context_length", 1, MAX_SIZES["context_length"], 1)
    keys.float("attention.layer_norm_rms_epsilon", 1.0)
    keys.float("rope.freq_base", 1e12)
    kind = meta.get(f"{keys.arch}.rope.scaling.type", "none")
    if not isinstance(kind, str):
        raise keys.error("rope.scaling.type", f"must be a string, got {type(kind).__name__}")
    keys.float("rope.scaling.factor", 1e6, required=kind == "linear")
    _check_shapes(meta, tensors, keys, head_dim, heads, kv)


def _check_shapes(meta: dict[str, Any], tensors: list[TensorInfo], keys: _Keys, head_dim: int,
                  heads: int, kv: Any) -> None:
    """token_embd is (embedding_length, vocabulary) with a vocabulary at least as long as the
    token list; q/k rows are whole heads (the import un-permutes them); rope_freqs is (D/2,)."""
    d, n_tokens = meta[f"{keys.arch}.embedding_length"], len(meta["tokenizer.ggml.tokens"])
    shapes = {t.name: list(t.shape) for t in tensors}  # GGUF order: innermost first
    if "token_embd.weight" not in shapes:
        raise CheckpointError(f"{keys.path}: the GGUF file has no token_embd.weight tensor")
    embd = shapes["token_embd.weight"]
    if len(embd) != 2 or embd[0] != d or not n_tokens <= embd[1] <= MAX_SIZES["vocab_size"]:
        raise CheckpointError(
            f"{keys.path}: tensor token_embd.weight has shape {embd}; expected [{d}, V] "
            f"({keys.arch}.embedding_length, a vocabulary V from the token count {n_tokens} to "
            f"{MAX_SIZES['vocab_size']})")
    if "rope_freqs.weight" in shapes and shapes["rope_freqs.weight"] != [head_dim // 2]:
        raise CheckpointError(f"{keys.path}: tensor rope_freqs.weight has shape "
                              f"{shapes['rope_freqs.weight']}; expected [{head_dim // 2}]")
    for name, shape in shapes.items():
        m = re.fullmatch(r"blk\.\d+\.attn_([qk])\.(weight|bias)", name)
        if m is None:
            continue
        n = heads if m[1] == "q" else kv if _is_int(kv) else None
        if n is not None and shape[-1] != n * head_dim:
            raise CheckpointError(f"{keys.path}: tensor {name} has shape {shape}; its last "
                                  f"dimension must be {n} heads x {head_dim}")
