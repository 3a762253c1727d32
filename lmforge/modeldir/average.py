"""Weight averaging of model directories: checkpoint averaging (fairseq's
``average_checkpoints``) and "model soups" (Wortsman et al. 2022: the mean of models fine-tuned
from one starting point with different seeds or hyperparameters is often better than each,
and is still one model with one forward pass)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ..config import to_dict
from ..errors import CheckpointError
from .directory import (TOKENIZER, load_tokenizer_file, read_config, read_meta,
                                  read_weights, write_model_dir)
from .meta import AveragedInput, ModelMeta, Source

_SAME_META = ("classifier", "sentence_embedding", "seq2seq_tokens")
"""meta.json fields that say how to use the model: they must agree for the mean to mean anything."""


def _first_difference(a, b, prefix: str = "") -> str | None:
    """The first field (dotted path) where two JSON-like values differ, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(a.keys() | b.keys()):
            d = _first_difference(a.get(k), b.get(k), f"{prefix}{k}.")
            if d:
                return d
        return None
    return None if a == b else f"{prefix.rstrip('.')} ({a!r} vs {b!r})"


def average_model_dirs(model_dirs: Sequence[str | Path], out: str | Path,
                       weights: Sequence[float] | None = None) -> Path:
    """Write the (weighted) mean of the models in ``model_dirs`` to ``out``: one config, one
    tokenizer, the floating-point tensors averaged in fp32 and stored in their dtype. They must
    share config.json, tokenizer.json and the meta.json fields that say how to use them (a
    classifier's labels, pooling); otherwise a clear error names the field and the directory.
    ``out``'s meta.json is the first model's (generation settings and chat template, pooling,
    labels, ...), its source ``averaged`` (paths and weights; the first model's own source
    kept as ``origin``)."""
    dirs = [Path(d) for d in model_dirs]
    if len(dirs) < 2:
        raise CheckpointError(f"averaging needs at least 2 model directories, got {len(dirs)}")
    w = [1.0] * len(dirs) if weights is None else [float(x) for x in weights]
    if len(w) != len(dirs) or any(x < 0 for x in w) or sum(w) <= 0:
        raise CheckpointError(f"give one non-negative weight per model directory ({len(dirs)}), "
                              f"not all zero; got {list(weights or [])}")
    w = [x / sum(w) for x in w]
    first, cfg = dirs[0], read_config(dirs[0])
    tok_text = (first / TOKENIZER).read_text(encoding="utf-8") if (first / TOKENIZER).is_file() else None
    meta = read_meta(first)
    total: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    for d, wd in zip(dirs, w):
        diff = _first_difference(to_dict(cfg), to_dict(read_config(d)))
        if diff:
            raise CheckpointError(f"{d / 'config.json'}: field {diff} differs from {first}; only "
                                  "models of one architecture can be averaged")
        other = (d / TOKENIZER).read_text(encoding="utf-8") if (d / TOKENIZER).is_file() else None
        if other != tok_text:
            raise CheckpointError(f"{d / TOKENIZER} differs from {first / TOKENIZER}; averaged "
                                  "models must share their tokenizer")
        m = read_meta(d)
        for key in _SAME_META:
            diff = _first_difference(to_dict(getattr(meta, key)), to_dict(getattr(m, key)),
                                     f"{key}.")
            if diff:
                raise CheckpointError(f"{d / 'meta.json'}: {diff} differs from {first}; the "
                                      "models must be used the same way to be averaged")
        tensors = read_weights(d)
        if total and tensors.keys() != total.keys():
            odd = sorted(tensors.keys() ^ total.keys())[:3]
            raise CheckpointError(f"{d / 'model.safetensors'}: tensors {odd} are not in every "
                                  "model directory")
        for k, t in tensors.items():
            if not t.is_floating_point():
                if k in total and not torch.equal(total[k], t):
                    raise CheckpointError(f"{d / 'model.safetensors'}: integer tensor {k!r} "
                                          f"differs from {first}'s and cannot be averaged")
                total[k] = t
                continue
            if k in total and total[k].shape != t.shape:
                raise CheckpointError(f"{d / 'model.safetensors'}: {k} has shape "
                                      f"{tuple(t.shape)}, {first} has {tuple(total[k].shape)}")
            dtypes.setdefault(k, t.dtype)
            total[k] = total[k] + wd * t.float() if k in total else wd * t.float()
    tensors = {k: t.to(dtypes[k]) if k in dtypes else t for k, t in total.items()}
    tokenizer = load_tokenizer_file(first) if tok_text is not None else None
    return write_model_dir(out, cfg, tensors, tokenizer, _averaged_meta(meta, dirs, w))


def _averaged_meta(first: ModelMeta, dirs: list[Path], weights: list[float]) -> ModelMeta:
    """The first model's meta.json, its source now the average of ``dirs``."""
    inputs = [AveragedInput(path=str(d), weight=round(x, 6)) for d, x in zip(dirs, weights)]
    return first.with_fields(source=Source(kind="averaged", inputs=inputs, origin=first.source))
