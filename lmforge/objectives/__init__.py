"""Training objectives: each turns (model, batch) into a scalar loss."""

from .causal_lm import causal_lm_loss

__all__ = ["causal_lm_loss"]
