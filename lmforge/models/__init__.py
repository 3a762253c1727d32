"""Models assembled from blocks by a typed config."""

from torch import nn

from .causal_lm import CausalLM
from .classifier import ClassificationHead, SequenceClassifier
from .config import ModelConfig
from .encoder import EncoderModel, MaskedLM, MaskedLMOutput
from .cnn import ImageCNN, TextCNNClassifier
from .forecast import FORECASTERS
from .heads import MLMHead, NSPHead, Pooler, pool
from .recurrent import RecurrentClassifier, RecurrentLM
from .seq2seq import Seq2SeqLM
from .signal import SIGNAL_MODELS, signal_kind
from .transformer import Transformer
from .vit import VisionTransformer

MODEL_CLASSES: dict[str, type[nn.Module]] = {"decoder": CausalLM, "encoder": MaskedLM,
                                             "classifier": SequenceClassifier, "seq2seq": Seq2SeqLM,
                                             **FORECASTERS,
                                             # baselines and images (docs/baselines.md)
                                             "vit": VisionTransformer, "image_cnn": ImageCNN,
                                             "text_cnn": TextCNNClassifier,
                                             "recurrent_classifier": RecurrentClassifier,
                                             "rnn": RecurrentLM, "lstm": RecurrentLM,
                                             "gru": RecurrentLM, **SIGNAL_MODELS}


def model_kind(cfg: ModelConfig) -> str:
    """The MODEL_CLASSES key for a config: ``cfg.arch``, or ``classifier`` for an encoder with
    ``heads = "classifier"`` (``recurrent_classifier`` for an rnn/lstm/gru one); on 1-D
    signals (``signal_length > 0``) the signal model of the arch (lmforge.models.signal)."""
    if (kind := signal_kind(cfg)) is not None:
        return kind
    if cfg.arch in ("rnn", "lstm", "gru") and cfg.heads == "classifier":
        return "recurrent_classifier"
    return "classifier" if cfg.arch == "encoder" and cfg.heads == "classifier" else cfg.arch


def build_model(cfg: ModelConfig) -> nn.Module:
    """Instantiate the model class for ``cfg`` (:func:`model_kind`) with fresh weights."""
    return MODEL_CLASSES[model_kind(cfg)](cfg)


__all__ = ["CausalLM", "ClassificationHead", "EncoderModel", "MLMHead", "MODEL_CLASSES", "MaskedLM",
           "MaskedLMOutput", "ModelConfig", "NSPHead", "Pooler", "Seq2SeqLM", "SequenceClassifier",
           "Transformer", "VisionTransformer", "build_model", "model_kind", "pool"]
