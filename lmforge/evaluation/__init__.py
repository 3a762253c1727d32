"""Measuring models: perplexity and bits per character/byte; masked-LM and NSP accuracy."""

from .mlm import mlm_metrics
from .perplexity import PerplexityResult, perplexity, text_perplexity, windows

__all__ = ["PerplexityResult", "mlm_metrics", "perplexity", "text_perplexity", "windows"]
