"""Using a trained model: generation with a KV cache and sampling."""

from .generate import GenerationConfig, generate, generate_text, generate_tokens, stream_text
from .sampling import filter_logits, sample_next

__all__ = ["GenerationConfig", "filter_logits", "generate", "generate_text", "generate_tokens",
           "sample_next", "stream_text"]
