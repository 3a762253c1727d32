"""The model directory: the one format every lmforge command reads and writes.

    MODEL_DIR/
      config.json        the ModelConfig
      model.safetensors  the weights (tied weights stored once)
      tokenizer.json     a Hugging Face `tokenizers` tokenizer
      meta.json          provenance: how it was trained, on what, with which results
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..config import from_dict, to_dict
from ..errors import CheckpointError, ConfigError, TokenizerError
from ..models import ModelConfig, build_model
from .atomic import atomic_write, atomic_write_text

CONFIG, WEIGHTS, TOKENIZER, META = "config.json", "model.safetensors", "tokenizer.json", "meta.json"

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: object  # tokenizers.Tokenizer
    config: ModelConfig
    meta: dict = field(default_factory=dict)
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


def save_model_dir(path: str | Path, model: nn.Module, tokenizer, meta: dict | None = None) -> Path:
    return write_model_dir(path, model.cfg, _state_dict_untied(model), tokenizer, meta)


def write_model_dir(path: str | Path, cfg: ModelConfig, tensors: dict[str, torch.Tensor], tokenizer,
                    meta: dict | None = None) -> Path:
    """Write a model directory from a config and a state dict (each tensor once, tied weights
    left out) without building the model, as converters do."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    atomic_write(path / WEIGHTS, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
    atomic_write_text(path / CONFIG, json.dumps(to_dict(cfg), indent=2) + "\n")
    if tokenizer is not None:
        atomic_write_text(path / TOKENIZER, tokenizer.to_str(pretty=True))
    meta = dict(meta or {})
    meta.setdefault("saved_at", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    meta.setdefault("lmforge_version", _version())
    atomic_write_text(path / META, json.dumps(meta, indent=2, default=str) + "\n")
    return path


def update_meta(path: str | Path, **fields) -> dict:
    """Add or replace top-level fields of a model directory's meta.json; returns the result."""
    f = Path(path) / META
    meta = {}
    if f.is_file():
        try:
            meta = json.loads(f.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            raise CheckpointError(f"{f} is not valid JSON; the file is corrupt") from None
    meta.update(fields)
    atomic_write_text(f, json.dumps(meta, indent=2, default=str) + "\n")
    return meta


def _version() -> str:
    from .. import __version__

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
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{f} is not valid JSON ({e}); the file is corrupt") from None
    try:
        return from_dict(ModelConfig, data, "model")
    except ConfigError as e:
        raise ConfigError(f"{f}: {e}") from None


def load_tokenizer_file(path: Path):
    from tokenizers import Tokenizer

    f = path / TOKENIZER
    if not f.is_file():
        raise TokenizerError(f"{f} is missing; copy the tokenizer the model was trained with there")
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
    f = path / WEIGHTS
    if not f.is_file():
        raise CheckpointError(f"{f} is missing; the model directory is incomplete")
    try:
        return load_file(str(f))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{f} is corrupt or truncated ({e}); re-export or retrain the model") from None


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


def read_meta(path: Path) -> dict:
    if not (path / META).is_file():
        return {}
    try:
        return json.loads((path / META).read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return {"warning": f"{path / META} is not valid JSON"}


def load_state(path: Path, model: nn.Module) -> None:
    f = path / WEIGHTS
    tensors = read_weights(path)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    tied = model.tied_keys() if hasattr(model, "tied_keys") else set()
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise CheckpointError(f"{f} does not match config.json: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")


def load_model_dir(path: str | Path, device: str | torch.device = "cpu",
                   dtype: str | None = None) -> LoadedModel:
    """Load a model directory for inference (eval mode) on ``device``, in ``dtype``."""
    t0 = time.perf_counter()
    path = Path(path)
    cfg = read_config(path)
    tokenizer = load_tokenizer_file(path)
    check_vocab(tokenizer, cfg, str(path / TOKENIZER))
    model = build_model(cfg)
    load_state(path, model)
    if dtype is not None:
        if dtype not in DTYPES:
            raise ConfigError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
        model.to(DTYPES[dtype])
    model.to(device).eval()
    return LoadedModel(model, tokenizer, cfg, read_meta(path), path, time.perf_counter() - t0)
