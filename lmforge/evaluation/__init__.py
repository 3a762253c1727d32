"""Measuring models: perplexity and bits per character/byte."""

from .perplexity import PerplexityResult, perplexity, text_perplexity, windows

__all__ = ["PerplexityResult", "perplexity", "text_perplexity", "windows"]
