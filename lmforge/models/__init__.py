"""Models assembled from blocks by a typed config."""

from torch import nn

from .causal_lm import CausalLM
from .config import ModelConfig
from .transformer import Transformer

MODEL_CLASSES: dict[str, type[nn.Module]] = {"decoder": CausalLM}


def build_model(cfg: ModelConfig) -> nn.Module:
    """Instantiate the model class for ``cfg.arch`` with freshly initialised weights."""
    return MODEL_CLASSES[cfg.arch](cfg)


__all__ = ["CausalLM", "MODEL_CLASSES", "ModelConfig", "Transformer", "build_model"]
