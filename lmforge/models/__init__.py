"""Models assembled from blocks by a typed config."""

from torch import nn

from .causal_lm import CausalLM
from .config import ModelConfig
from .encoder import EncoderModel, MaskedLM, MaskedLMOutput
from .heads import MLMHead, NSPHead, Pooler, pool
from .transformer import Transformer

MODEL_CLASSES: dict[str, type[nn.Module]] = {"decoder": CausalLM, "encoder": MaskedLM}


def build_model(cfg: ModelConfig) -> nn.Module:
    """Instantiate the model class for ``cfg.arch`` with freshly initialised weights."""
    return MODEL_CLASSES[cfg.arch](cfg)


__all__ = ["CausalLM", "EncoderModel", "MLMHead", "MODEL_CLASSES", "MaskedLM", "MaskedLMOutput",
           "ModelConfig", "NSPHead", "Pooler", "Transformer", "build_model", "pool"]
