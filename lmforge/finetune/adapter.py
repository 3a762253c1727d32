"""Adapter directories: a LoRA adapter (and the modules trained with it) saved apart from its
base model, with a fingerprint of the base it was trained on, and loaded back onto that base
(refusing any other)."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..errors import CheckpointError, ConfigError
from ..files.atomic import atomic_write, atomic_write_text
from ..files.safetensors import save_safetensors
from ..version import __version__
from .lora import (
    ADAPTER_CONFIG,
    ADAPTER_FORMAT,
    ADAPTER_WEIGHTS,
    LoRAConfig,
    LoRALinear,
    LoRAReport,
    _inject,
    _mark_saved_modules,
    _report,
    adaptable_layer_names,
    lora_layers,
    lora_state_dict,
    saved_module_state,
    saved_modules,
)
from .nf4 import NF4Linear


def _logical_tensors(model: nn.Module, exclude: Sequence[str] = (),
                     ) -> list[tuple[str, tuple[int, ...], torch.Tensor | None]]:
    """(name, shape, tensor to hash or None) for every base-model tensor, with adapters left
    out and LoRA / NF4 wrappers mapped back to the plain layer's names. Only tensors that
    neither LoRA nor quantisation ever change (embeddings, norms, ...) are hashed by value,
    and none inside the modules ``exclude`` (the modules trained with the adapter)."""
    out, seen = [], set()
    loras = lora_layers(model)
    for mod_name, m in model.named_modules():
        if isinstance(m, LoRALinear):
            continue
        logical = mod_name[: -len(".base")] if mod_name.endswith(".base") and \
            mod_name[: -len(".base")] in loras else mod_name
        prefix = f"{logical}." if logical else ""
        if isinstance(m, NF4Linear):
            out.append((f"{prefix}weight", (m.out_features, m.in_features), None))
            if m.bias is not None:
                out.append((f"{prefix}bias", tuple(m.bias.shape), None))
            continue
        for pname, p in m.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            hashed = None if isinstance(m, nn.Linear) or any(
                logical == e or logical.startswith(f"{e}.") for e in exclude) else p
            out.append((f"{prefix}{pname}", tuple(p.shape), hashed))
    return sorted(out, key=lambda t: t[0])


_HASH_SLICE = 1 << 20  # elements hashed at a time


def base_fingerprint(model: nn.Module, exclude: Sequence[str] | None = None) -> str:
    """sha256 over the base model's parameter names and shapes and the values (rounded to
    bfloat16, so an fp32 and a bf16 copy agree) of the tensors that adapters and NF4 leave
    alone. The same for the model before and after ``inject_lora`` or ``quantize_nf4``; it
    differs between bases of another architecture or with other embeddings/norms. The values
    inside the modules ``exclude`` (default: the model's modules to save) are not hashed."""
    h = hashlib.sha256()
    exclude = saved_modules(model) if exclude is None else tuple(exclude)
    for name, shape, t in _logical_tensors(model, exclude):
        h.update(f"{name}:{shape};".encode())
        if t is not None:  # in slices: no second copy of an embedding table in memory
            flat = t.detach().reshape(-1)
            for i in range(0, flat.numel(), _HASH_SLICE):
                bits = flat[i:i + _HASH_SLICE].to(torch.bfloat16).view(torch.int16).cpu()
                h.update(bits.numpy())  # contiguous: hashed without a bytes copy
    return h.hexdigest()[:16]


# -- save / load ------------------------------------------------------------------------------

def save_adapter(model: nn.Module, path: str | Path, fingerprint: str | None = None,
                 cfg: LoRAConfig | None = None, meta: dict | None = None) -> Path:
    """Write ``adapter_model.safetensors`` (A and B of every layer, and the tensors of the
    modules to save) and ``adapter_config.json`` (rank, alpha, dropout, targets, layers,
    modules_to_save, base fingerprint) to the directory ``path``. The fingerprint defaults to
    that of ``model``'s base."""
    layers = lora_layers(model)
    if not layers:
        raise ConfigError("save_adapter: the model has no LoRA adapters (call inject_lora first)")
    first = next(iter(layers.values()))
    if cfg is None:
        p = first.lora_dropout.p if isinstance(first.lora_dropout, nn.Dropout) else 0.0
        cfg = LoRAConfig(rank=first.rank, alpha=first.alpha, dropout=p,
                         targets=first.targets or tuple(layers))
    saved = saved_modules(model)
    fp = fingerprint or base_fingerprint(model)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {**lora_state_dict(model), **saved_module_state(model)}
    atomic_write(path / ADAPTER_WEIGHTS, lambda p: save_safetensors(tensors, p))
    config = {"format": ADAPTER_FORMAT, "version": 1, **asdict(cfg), "layers": list(layers),
              "base_fingerprint": fp, "trainable_params": sum(t.numel() for t in tensors.values()),
              "lmforge_version": __version__, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              **(meta or {})}
    config["targets"] = list(cfg.targets)
    config["modules_to_save"] = list(saved)
    atomic_write_text(path / ADAPTER_CONFIG, json.dumps(config, indent=2) + "\n")
    return path


def read_adapter_config(path: str | Path) -> dict:
    f = Path(path) / ADAPTER_CONFIG
    if not f.is_file():
        raise CheckpointError(f"{f} is missing: {path} is not an lmforge adapter directory "
                              f"(it needs {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS})")
    try:
        config = json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{f} is not valid JSON ({e}); the file is corrupt") from None
    if not isinstance(config, dict) or config.get("format") != ADAPTER_FORMAT:
        got = config.get("format") if isinstance(config, dict) else None
        raise CheckpointError(f"{f}: format is {got!r}, expected {ADAPTER_FORMAT!r}")
    missing = [k for k in ("rank", "alpha", "layers", "base_fingerprint") if k not in config]
    if missing:
        raise CheckpointError(f"{f} lacks {', '.join(missing)}; the file is incomplete")
    return config


def _attach(model: nn.Module, path: Path, config: dict, saved: list[str]) -> None:
    """Give ``model`` the adapter's LoRA layers and modules_to_save (or check that it has
    exactly those already)."""
    layers = list(config["layers"])
    existing = lora_layers(model)
    if existing:
        if sorted(existing) != sorted(layers):
            raise CheckpointError(f"{path}: the model has adapters on other layers than the "
                                  "saved ones; load the adapter onto the plain base model")
        return
    missing = [n for n in layers if n not in set(adaptable_layer_names(model))]
    if missing:
        raise CheckpointError(f"{path}: the model has no linear layer(s) {missing[:5]}")
    no_module = [n for n in saved if not _has_module(model, n)]
    if no_module:
        raise CheckpointError(f"{path}: the model has no module(s) {no_module[:5]} "
                              "(modules_to_save)")
    _inject(model, layers, int(config["rank"]), float(config["alpha"]),
            float(config.get("dropout", 0.0)), config.get("targets") or layers)
    _mark_saved_modules(model, saved, f"{path}: modules_to_save")


def load_adapter(model: nn.Module, path: str | Path, check_base: bool = True) -> LoRAReport:
    """Load the adapters saved in ``path`` onto ``model`` (a base model, quantised or not, or
    one already carrying adapters on exactly the same layers), in place.

    CheckpointError when the model is not the base the adapter was trained on (the two
    fingerprints differ; ``check_base=False`` skips this), or the files are missing/corrupt.
    """
    path = Path(path)
    config = read_adapter_config(path)
    saved = [str(n) for n in config.get("modules_to_save") or []]
    if check_base:
        have = base_fingerprint(model, exclude=saved)
        want = config.get("base_fingerprint")
        if have != want:
            raise CheckpointError(
                f"{path}: this adapter was trained on a base model with fingerprint {want}, but "
                f"the model given has fingerprint {have}: load the base it was trained on (pass "
                "check_base=False to load it anyway, if the shapes fit)")
    f = path / ADAPTER_WEIGHTS
    if not f.is_file():
        raise CheckpointError(f"{f} is missing; the adapter directory is incomplete")
    try:
        tensors = load_file(str(f))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{f} is corrupt or truncated ({e})") from None
    _attach(model, path, config, saved)
    own = {k: v for k, v in model.state_dict().items() if k.endswith((".lora_A", ".lora_B"))}
    try:
        own.update(saved_module_state(model, saved))
    except AttributeError:
        raise CheckpointError(f"{path}: the model has no module(s) {saved[:5]} "
                              "(modules_to_save)") from None
    wrong = sorted(set(own) ^ set(tensors))
    bad_shape = [f"{k} {tuple(tensors[k].shape)} (model needs {tuple(own[k].shape)})"
                 for k in sorted(set(own) & set(tensors)) if tensors[k].shape != own[k].shape]
    if wrong or bad_shape:
        raise CheckpointError(f"{f} does not fit the model: missing/unexpected {wrong[:5]}, "
                              f"wrong shape {bad_shape[:5]}")
    with torch.no_grad():
        for name, layer in lora_layers(model).items():
            layer.lora_A.copy_(tensors[f"{name}.lora_A"])
            layer.lora_B.copy_(tensors[f"{name}.lora_B"])
    for n in saved:
        prefix = f"{n}."
        model.get_submodule(n).load_state_dict(
            {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    return _report(model)


def _has_module(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True
