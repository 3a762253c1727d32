"""Hugging Face model families lmforge converts, one module each, and the registry that picks
one: by ``model_type`` on import, by what the lmforge config can be written as on export."""

from __future__ import annotations

from ...errors import ConfigError
from ...models import ModelConfig
from . import bart, bert, gemma, gpt2, llama, marian, t5
from .base import Family

FAMILIES: dict[str, Family] = {f.name: f for f in (gpt2.FAMILY, llama.FAMILY, gemma.FAMILY,
                                                   bert.FAMILY, marian.FAMILY, t5.FAMILY,
                                                   bart.FAMILY)}
MODEL_TYPES: dict[str, Family] = {t: f for f in FAMILIES.values() for t in f.model_types}


def family_for_model_type(model_type: str | None, where: str = "config.json") -> Family:
    if model_type not in MODEL_TYPES:
        raise ConfigError(f"{where}: model_type {model_type!r} is not supported; supported: "
                          f"{', '.join(MODEL_TYPES)}")
    return MODEL_TYPES[model_type]


def family_for_config(cfg: ModelConfig, prefer: str | None = None) -> Family:
    """The family that can represent ``cfg`` (``prefer`` first, e.g. the one it came from)."""
    order = sorted((f for f in FAMILIES.values() if f.exports), key=lambda f: f.name != prefer)
    found = {f.name: f.export_problems(cfg) for f in order}
    for f in order:
        if not found[f.name]:
            return f
    why = "; ".join(f"for {name}: {', '.join(p)}" for name, p in found.items())
    raise ConfigError(f"this model cannot be exported to Hugging Face; these fields prevent it, "
                      f"{why}")


__all__ = ["FAMILIES", "MODEL_TYPES", "Family", "family_for_config", "family_for_model_type"]
