"""Measuring models: perplexity and bits per character/byte; masked-LM and NSP accuracy;
classification metrics."""

from .classification import (classification_metrics, format_confusion, majority_baseline,
                             quick_metrics)
from .mlm import mlm_metrics
from .perplexity import PerplexityResult, perplexity, text_perplexity, windows

__all__ = ["PerplexityResult", "classification_metrics", "format_confusion", "majority_baseline",
           "mlm_metrics", "perplexity", "quick_metrics", "text_perplexity",
           "windows"]

from .translation import TranslationScores, side_by_side, translation_scores

__all__ += ["TranslationScores", "side_by_side", "translation_scores"]
