"""Using a trained model: generation with a KV cache and sampling; encoder embeddings and
classifier predictions; translation with encoder–decoders."""

from .chat import ChatSession
from .chat_template import render_chat
from .encoder import Classifier, sentence_embeddings
from .generate import (GenerationConfig, PrefixCache, generate, generate_text, generate_tokens,
                       stream_ids, stream_text)
from .recurrent import generate_recurrent
from .sampling import filter_logits, sample_next
from .settings import (LMFORGE_SAMPLING, GenerationSettings, Sampling, effective_sampling,
                       generation_settings)
from .translate import DecodeConfig, Translator

__all__ = ["ChatSession", "Classifier", "DecodeConfig", "GenerationConfig", "PrefixCache", "Translator", "GenerationSettings", "LMFORGE_SAMPLING", "Sampling",
           "effective_sampling", "filter_logits",
           "generate", "generate_recurrent", "generate_text", "generate_tokens", "generation_settings", "render_chat",
           "sample_next", "sentence_embeddings", "stream_ids", "stream_text"]
