"""A base model directory with a LoRA adapter merged in, for inference (``lmforge generate
--adapter``) or to save as an ordinary model directory (QLoRA fine-tuning's final model)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..modeldir import LoadedModel, load_model_dir
from ..modeldir.meta import Source
from .adapter import load_adapter
from .lora import merge_lora


def merge_adapter_into(lm: LoadedModel, adapter: str | Path) -> LoadedModel:
    """Load ``adapter`` (a LoRA adapter directory trained on ``lm``'s base; its base
    fingerprint is checked) onto ``lm.model`` and merge it into the weights, in place. The
    meta records the merge (``source.kind = "merged"``, the base's own source kept as
    ``origin``); the generation settings and chat template are the base's."""
    load_adapter(lm.model, adapter)
    merge_lora(lm.model)
    source = Source(kind="merged", base=str(lm.path) if lm.path else None, adapter=str(adapter),
                    origin=lm.meta.source)
    lm.meta = lm.meta.with_fields(source=source, base=source.base)
    return lm


def load_with_adapter(path: str | Path, adapter: str | Path, device: str | torch.device = "cpu",
                      dtype: str | None = None) -> LoadedModel:
    """:func:`lmforge.modeldir.load_model_dir` of the base ``path`` (on the CPU, in ``dtype``),
    ``adapter`` merged in (:func:`merge_adapter_into`), then moved to ``device`` (eval mode)."""
    lm = merge_adapter_into(load_model_dir(path, device="cpu", dtype=dtype), adapter)
    lm.model.to(device).eval()
    return lm
