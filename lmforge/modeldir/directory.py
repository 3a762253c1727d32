"""The model directory: the one format every lmforge command reads and writes.

    MODEL_DIR/
      config.json        the ModelConfig
      model.safetensors  the weights (tied weights stored once)
      tokenizer.json     a Hugging Face `tokenizers` tokenizer
      meta.json          a typed ModelMeta (lmforge.modeldir.meta): provenance, training,
                         generation settings and chat template, eval, ...
      source_tokenizer.json  (encoder–decoders with separate vocabularies) the source side's
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch
from tokenizers import Tokenizer
from torch import nn

from ..config import from_dict, to_dict
from ..errors import CheckpointError, ConfigError, TokenizerError
from ..files.atomic import atomic_write, atomic_write_text
from ..files.guard import is_empty_dir, replace_directory
from ..files.safetensors import read_header, read_safetensors, save_safetensors, stream_tensors
from ..models import ModelConfig, build_model
from ..version import __version__
from .integrity import check_finite, verify_sha256, with_sha256
from .meta import ModelMeta, as_meta, dumps_meta, read_meta_file

CONFIG, WEIGHTS, TOKENIZER, META = "config.json", "model.safetensors", "tokenizer.json", "meta.json"
SOURCE_TOKENIZER = "source_tokenizer.json"
"""Encoder–decoders with a source vocabulary of their own keep its tokenizer here."""

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: object  # tokenizers.Tokenizer
    config: ModelConfig
    meta: ModelMeta = field(default_factory=ModelMeta)
    path: Path | None = None
    load_seconds: float = 0.0


def _state_dict_untied(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict with each shared tensor once (safetensors refuses aliases)."""
    out, seen = {}, set()
    for name, t in model.state_dict().items():
        key = t.data_ptr(), t.shape
        if t.numel() and key in seen:
            continue
        seen.add(key)
        out[name] = t.detach().contiguous().cpu()
    return out


def save_model_dir(path: str | Path, model: nn.Module, tokenizer,
                   meta: ModelMeta | dict | None = None) -> Path:
    """Write ``model`` (tied weights stored once), its tokenizer and ``meta`` (a ModelMeta; a
    plain dict is read as a meta.json's contents, for callers not yet moved over)."""
    return write_model_dir(path, model.cfg, _state_dict_untied(model), tokenizer, meta)


def write_model_dir(path: str | Path, cfg: ModelConfig, tensors: dict[str, torch.Tensor], tokenizer,
                    meta: ModelMeta | dict | None = None, in_place: bool = False) -> Path:
    """Write a model directory from a config and a state dict (each tensor once, tied weights
    left out) without building the model, as converters do. A new (or empty) directory is
    written beside it and renamed into place, so its files appear together or not at all; an
    existing one (a run saving a checkpoint) file by file, each atomically (or with
    ``in_place``)."""
    path = Path(path)
    if not in_place and (not path.exists() or is_empty_dir(path)):
        return replace_directory(path, lambda tmp: write_model_dir(tmp, cfg, tensors, tokenizer,
                                                                    meta, in_place=True))
    path.mkdir(parents=True, exist_ok=True)
    atomic_write(path / WEIGHTS, lambda p: save_safetensors(tensors, p))
    atomic_write_text(path / CONFIG, json.dumps(to_dict(cfg), indent=2) + "\n")
    if tokenizer is not None:
        atomic_write_text(path / TOKENIZER, tokenizer.to_str(pretty=True))
    meta = record_weights_sha256(path, meta)  # integrity: checked at load (integrity.py)
    write_meta(path, as_meta(meta, str(path / META)))
    return path


def write_meta(path: str | Path, meta: ModelMeta) -> ModelMeta:
    """Write ``path/meta.json``, stamped with the time and the lmforge version."""
    meta = meta.with_fields(saved_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                            lmforge_version=_version())
    atomic_write_text(Path(path) / META, dumps_meta(meta))
    return meta


def update_meta(path: str | Path, **fields) -> ModelMeta:
    """Set fields of a model directory's meta.json (typed fields are type-checked, other names
    go into ``extra``); returns the result."""
    path = Path(path)
    return write_meta(path, read_meta(path).with_fields(**fields))


def _version() -> str:
    return __version__


def read_config(path: str | Path) -> ModelConfig:
    path = Path(path)
    f = path / CONFIG
    if not path.is_dir():
        raise CheckpointError(f"model directory {str(path)!r} does not exist; "
                              "train one with `lmforge train` or `lmforge quickstart`")
    if not f.is_file():
        raise CheckpointError(f"{f} is missing: {path} is not an lmforge model directory "
                              "(it needs config.json, model.safetensors, tokenizer.json)")
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"{f} is not valid JSON ({e}); the file is corrupt") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{f} must hold a JSON object, got {type(data).__name__}; the "
                              "file is corrupt")
    try:
        return from_dict(ModelConfig, data, "model")
    except ConfigError as e:
        raise ConfigError(f"{f}: {e}") from None


def load_tokenizer_file(path: Path):
    f = path / TOKENIZER
    if not f.is_file():
        raise TokenizerError(f"{f} is missing; copy the tokenizer the model was trained with there")
    try:
        return Tokenizer.from_file(str(f))
    except Exception as e:  # tokenizers raises plain Exception subclasses
        raise TokenizerError(f"{f} cannot be read as a tokenizer ({e})") from None


def load_source_tokenizer(path: str | Path):
    """The source-side tokenizer of an encoder–decoder with separate vocabularies, or None
    (one joint tokenizer.json serves both sides)."""
    f = Path(path) / SOURCE_TOKENIZER
    if not f.is_file():
        return None
    try:
        return Tokenizer.from_file(str(f))
    except Exception as e:  # tokenizers raises plain Exception subclasses
        raise TokenizerError(f"{f} cannot be read as a tokenizer ({e})") from None


def check_vocab(tokenizer, cfg: ModelConfig, where: str) -> None:
    n = tokenizer.get_vocab_size(with_added_tokens=True)
    if n > cfg.vocab_size:
        raise TokenizerError(
            f"{where}: the tokenizer has {n} tokens but the model's vocab_size is {cfg.vocab_size}; "
            "use the tokenizer.json the model was trained with (or retrain the model with this one)")


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of ``path/model.safetensors`` by lmforge name, in their stored dtype."""
    return read_safetensors(Path(path) / WEIGHTS)


def verify_weights(path: str | Path) -> bool:
    """Check ``path/model.safetensors`` against the sha256 meta.json records (True), if it
    records one (else False); a mismatch raises CheckpointError."""
    return verify_sha256(path, read_meta(path), WEIGHTS)


def record_weights_sha256(path: str | Path, meta: ModelMeta | dict | None) -> ModelMeta:
    """``meta`` with the sha256 of ``path/model.safetensors`` in its ``files`` (the write side
    calls this just before writing meta.json)."""
    return with_sha256(path, meta, WEIGHTS, str(Path(path) / META))


def check_tensors(cfg: ModelConfig, tensors: dict[str, torch.Tensor], where: str) -> None:
    """Refuse a state dict whose names or shapes do not fit ``cfg`` (compared with the model
    built on the meta device, so nothing is allocated). Tied tensors may be absent."""
    with torch.device("meta"):
        ref = build_model(cfg)
    tied = ref.tied_keys() if hasattr(ref, "tied_keys") else set()
    want = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in tensors.items()}
    missing = sorted(want.keys() - have.keys() - tied)
    unexpected = sorted(have.keys() - want.keys())
    wrong = [f"{k} {have[k]} (config needs {want[k]})" for k in sorted(want.keys() & have.keys())
             if have[k] != want[k]]
    if missing or unexpected or wrong:
        raise CheckpointError(f"{where}: the weights do not fit the config: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}, wrong shape {wrong[:5]}")


def read_meta(path: str | Path) -> ModelMeta:
    """A model directory's meta.json (version 2 or version-less) as a ModelMeta; an empty one
    when there is no meta.json."""
    return read_meta_file(Path(path) / META)


_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "constant_", "zeros_", "ones_",
                   "eye_", "dirac_", "xavier_uniform_", "xavier_normal_", "kaiming_uniform_",
                   "kaiming_normal_", "orthogonal_", "sparse_")


@contextmanager
def skip_init():
    """Build modules without initialising their weights (``torch.nn.init`` functions do
    nothing inside), for a model whose weights are loaded right after: a model's random
    initialisation takes longer than reading its weights."""
    saved = {name: getattr(nn.init, name) for name in _INIT_FUNCTIONS}
    for name in _INIT_FUNCTIONS:
        setattr(nn.init, name, lambda tensor, *a, **k: tensor)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(nn.init, name, fn)


def _read_cast(path: Path, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """The weights, floating-point ones cast to ``dtype``. Without a cast they are memory-
    mapped; with one, each tensor is read into memory, cast and released in turn, so the
    checkpoint is never resident in two dtypes at once (a mapped file's pages would count)."""
    if dtype is None:
        tensors = read_weights(path)
        verify_weights(path)
        check_finite(tensors, path / WEIGHTS)
        return tensors
    f = path / WEIGHTS
    if not f.is_file():
        raise CheckpointError(f"{f} is missing; the model directory is incomplete")
    header, read, fh = stream_tensors(f)
    out = {}
    try:
        with fh:
            verify_weights(path)
            for name in header:
                t = read(name)
                check_finite({name: t}, f)  # before the cast: float16 may overflow
                out[name] = t.to(dtype) if t.is_floating_point() else t
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{f} is corrupt or truncated; re-export or retrain the model "
                              f"({e})") from None
    return out


def load_state(path: Path, model: nn.Module, dtype: torch.dtype | None = None) -> None:
    """Load ``path``'s weights into ``model`` (names and shapes already checked by
    :func:`check_weights_fit`), the tensors read taking the place of the model's own (tied
    parameters stay tied); floating-point weights cast to ``dtype`` (None: torch's default
    dtype, float32, whatever dtype they are stored in)."""
    f = path / WEIGHTS
    tensors = _read_cast(path, dtype)
    if dtype is None:  # a checkpoint saved in bfloat16 still loads as float32 by default
        default = torch.get_default_dtype()
        tensors = {k: v.to(default) if v.is_floating_point() else v for k, v in tensors.items()}
    tied = model.tied_keys() if hasattr(model, "tied_keys") else set()
    params = dict(model.named_parameters(remove_duplicate=False))
    alias = {k: next(o for o, p in params.items() if p is params[k] and o not in tied)
             for k in tied if k in params}  # tied name -> the name it shares a tensor with
    missing, unexpected = model.load_state_dict(tensors, strict=False, assign=True)
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise CheckpointError(f"{f} does not match config.json: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
    for name, source in alias.items():  # assign replaced the shared parameter: share it again
        owner, _, attr = name.rpartition(".")
        src_owner, _, src_attr = source.rpartition(".")
        setattr(model.get_submodule(owner), attr,
                getattr(model.get_submodule(src_owner), src_attr))


def check_weights_fit(path: Path, cfg: ModelConfig) -> None:
    """Refuse a config.json whose tensors (names and shapes, from the model built on the meta
    device) are not the ones model.safetensors's header lists — checked before the model is
    allocated, so a hostile config.json cannot ask for more memory than the weights hold."""
    f = path / WEIGHTS
    if not f.is_file():
        raise CheckpointError(f"{f} is missing; the model directory is incomplete")
    with open(f, "rb") as fh:
        header, _ = read_header(fh, f)
    shapes = {k: SimpleNamespace(shape=tuple(v["shape"])) for k, v in header.items()}
    check_tensors(cfg, shapes, str(f))


def load_model_dir(path: str | Path, device: str | torch.device = "cpu",
                   dtype: str | None = None) -> LoadedModel:
    """Load a model directory for inference (eval mode) on ``device``, in ``dtype``. (With a
    LoRA adapter: :func:`lmforge.finetune.load_with_adapter`.)"""
    t0 = time.perf_counter()
    path = Path(path)
    cfg = read_config(path)
    tokenizer = load_tokenizer_file(path)
    check_vocab(tokenizer, cfg, str(path / TOKENIZER))
    if dtype is not None and dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    check_weights_fit(path, cfg)  # before allocating: config.json alone could ask for terabytes
    with skip_init():
        model = build_model(cfg)
    load_state(path, model, DTYPES[dtype] if dtype else None)
    if dtype is not None:
        model.to(DTYPES[dtype])  # the buffers (RoPE tables); the weights already are
    model.to(device).eval()
    return LoadedModel(model, tokenizer, cfg, read_meta(path), path, time.perf_counter() - t0)
