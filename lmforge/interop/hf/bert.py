"""Hugging Face BERT (``BertModel``, ``BertForPreTraining``, ``BertForMaskedLM``, MiniLM /
sentence-transformers folders) in the family registry, so ``lmforge import`` has one dispatch
by ``model_type``. The conversion lives in :mod:`lmforge.interop.hf_bert` (imported when used:
that module also uses this package); BERT is imported, not exported."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from ...models import ModelConfig
from .base import Family, Tensors


def config_from_hf(hf: dict) -> ModelConfig:
    from ..hf_bert import bert_config_from_hf

    return bert_config_from_hf(hf)


def state_dict_from_hf(sd: Mapping[str, torch.Tensor], cfg: ModelConfig) -> Tensors:
    from ..hf_bert import bert_state_dict_from_hf

    return bert_state_dict_from_hf(dict(sd), cfg)


def import_dir(src: Path, out: Path, dtype: str | None = None) -> Path:
    from ..hf_bert import import_bert_dir

    return import_bert_dir(src, out, dtype=dtype)


def _no_export(*_args) -> dict:
    raise NotImplementedError("BERT models are imported, not exported")


FAMILY = Family(name="bert", model_types=("bert",), architecture="BertModel", prefix="bert.",
                config_from_hf=config_from_hf, config_to_hf=_no_export,
                state_from_hf=state_dict_from_hf, state_to_hf=_no_export,
                export_problems=lambda cfg: ["BERT export is not supported"],
                import_dir=import_dir, exports=False)
