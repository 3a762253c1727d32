"""Seeing inside a model: a forward pass walked through with its numbers (``lmforge
explain``), and the attention explorer — attention per layer and head, rollout, logit lens,
head ablation (``lmforge attention``, the web view)."""

from .explorer import ablate_head, explore, explore_seq2seq, load_for_explore, rollout
from .render import format_html, format_terminal
from .tiny import tiny_model
from .walkthrough import Step, StepMismatch, Walkthrough, walkthrough

__all__ = ["Step", "StepMismatch", "Walkthrough", "ablate_head", "explore", "explore_seq2seq",
           "format_html", "format_terminal", "load_for_explore", "rollout", "tiny_model",
           "walkthrough"]
