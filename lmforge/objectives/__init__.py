"""Training objectives: each turns (model, batch) into a scalar loss."""

from .causal_lm import causal_lm_loss
from .classification import class_weights, classification_loss, classifier_logits
from .seq2seq import seq2seq_loss, seq2seq_objective
from .mlm import mask_batch, mask_tokens, mlm_nsp_loss, mlm_nsp_losses, special_tokens_mask

__all__ = ["causal_lm_loss", "class_weights", "classification_loss", "classifier_logits",
           "mask_batch", "mask_tokens", "mlm_nsp_loss", "mlm_nsp_losses",
           "seq2seq_loss", "seq2seq_objective", "special_tokens_mask"]

from .span_corruption import SENTINEL_FORMAT, corrupt, sentinel_tokens, span_mask

__all__ += ["SENTINEL_FORMAT", "corrupt", "sentinel_tokens", "span_mask"]

from .sft import sft_loss

__all__ += ["sft_loss"]
