"""Quantised model directories: written by ``lmforge quantize`` (and ``lmforge import
--keep-quant``), loaded by generate, chat and eval.

The directory is an ordinary model directory whose model.safetensors holds the portable
quantised tensors (:mod:`.model`) in place of the float weights of the linear layers, and whose
meta.json records ``extra.quantization`` (``mode``, ``group_size``, ``lm_head``, ...). The int4
CPU kernel's packed layout is made at load, never stored.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from ...errors import ConfigError
from ...modeldir import LoadedModel, load_model_dir
from ...modeldir.directory import (
    DTYPES,
    TOKENIZER,
    WEIGHTS,
    check_vocab,
    load_tokenizer_file,
    read_config,
    read_meta,
    read_weights,
    skip_init,
    verify_weights,
    write_model_dir,
)
from ...modeldir.integrity import check_finite
from ...modeldir.meta import ModelMeta
from ...models import build_model
from .model import (
    DEFAULT_GROUP_SIZE,
    DEFAULT_HEAD,
    _set,
    check_quantized,
    linear_from_tensors,
    quantize_model,
    quantized_tensors,
)

QUANT_KEY = "quantization"
"""meta.json ``extra`` key recording how a directory was quantised."""
FORMAT = 1


def quantization_info(path: str | Path) -> dict | None:
    """``extra.quantization`` of a model directory's meta.json (None: not quantised)."""
    info = read_meta(path).extra.get(QUANT_KEY)
    return info if isinstance(info, dict) else None


def write_quantized_dir(out: str | Path, cfg, tensors: dict[str, torch.Tensor], tokenizer,
                        meta: ModelMeta, info: dict) -> Path:
    """Write a quantised model directory (``info`` goes to meta.json's extra.quantization)."""
    return write_model_dir(out, cfg, tensors, tokenizer,
                           meta.with_fields(**{QUANT_KEY: {"format": FORMAT, **info}}))


def quantize_dir(src: str | Path, out: str | Path, mode: str,
                 group_size: int = DEFAULT_GROUP_SIZE, head: str = DEFAULT_HEAD) -> Path:
    """Quantise the float model directory ``src`` into ``out`` (a new or empty directory)."""
    if quantization_info(src):
        raise ConfigError(f"{src} is already quantised; quantise its float original instead")
    lm = load_model_dir(src)
    tensors = quantized_tensors(lm.model, mode, group_size, head)
    info = {"mode": mode, "group_size": group_size if "int4" in (mode, head) else None,
            "lm_head": head, "method": "round-to-nearest",
            "quantized_from": str(Path(src).resolve())}
    return write_quantized_dir(out, lm.config, tensors, lm.tokenizer, lm.meta, info)


def load_quantized_dir(path: str | Path, device: str | torch.device = "cpu",
                       dtype: str | None = None) -> LoadedModel:
    """Load a quantised model directory for inference: activations (and the float weights:
    embeddings, norms) in ``dtype`` (default float32), the linear layers quantised."""
    t0 = time.perf_counter()
    path = Path(path)
    if dtype is not None and dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    dt = DTYPES[dtype] if dtype else torch.get_default_dtype()
    cfg = read_config(path)
    tokenizer = load_tokenizer_file(path)
    check_vocab(tokenizer, cfg, str(path / TOKENIZER))
    tensors = read_weights(path)  # memory-mapped
    verify_weights(path)
    check_finite({k: v for k, v in tensors.items() if v.is_floating_point()}, path / WEIGHTS)
    with torch.device("meta"):  # names and shapes checked before anything is allocated
        kinds = check_quantized(build_model(cfg), tensors, str(path / WEIGHTS))
    with skip_init():
        model = build_model(cfg)  # the float linear weights are never touched, then dropped
    parts = {f"{n}.{p}" for n in kinds for p in ("qweight", "qweight4", "scales", "zeros", "bias")}
    floats = {k: v.to(dt) for k, v in tensors.items() if k not in parts}
    for name in kinds:
        _set(model, name, linear_from_tensors(tensors, name, dt,
                                              use_kernel=torch.device(device).type == "cpu"))
    model.load_state_dict(floats, strict=False, assign=True)
    _retie(model, kinds)
    if dtype is not None:  # the RoPE tables; the kernels' bfloat16 scales stay as they are
        model.to(dt)
    model.to(device).eval()
    return LoadedModel(model, tokenizer, cfg, read_meta(path), path, time.perf_counter() - t0)


def _retie(model, kinds: dict) -> None:
    """A tied LM head left in float shares the embedding matrix again (assign replaced it)."""
    head = getattr(model, "lm_head", None)
    if "lm_head.weight" in getattr(model, "tied_keys", lambda: set())() and "lm_head" not in kinds:
        embed = getattr(getattr(model, "backbone", None), "embed", None) or \
            getattr(getattr(model, "decoder", None), "embed", None)
        if embed is not None and head is not None:
            head.weight = embed.weight


def load_for_inference(path: str | Path, device: str | torch.device = "cpu",
                       dtype: str | None = None, quant: str | None = None,
                       group_size: int = DEFAULT_GROUP_SIZE, head: str = DEFAULT_HEAD,
                       loader: Callable[[], LoadedModel] | None = None) -> LoadedModel:
    """What generate, chat and eval load: a quantised directory as such; a float one with
    ``loader`` (default :func:`load_model_dir`), then quantised with ``quant`` (int8/int4)."""
    info = quantization_info(path) if Path(path, "meta.json").is_file() else None
    if info:
        if quant or loader is not None:
            raise ConfigError(f"{path} is already quantised ({info.get('mode')}); drop --quant "
                              "and --adapter (or use its float original)")
        return load_quantized_dir(path, device, dtype)
    lm = loader() if loader is not None else load_model_dir(path, device=device, dtype=dtype)
    if quant:
        quantize_model(lm.model, quant, group_size, head,
                       use_kernel=torch.device(device).type == "cpu")
    return lm
