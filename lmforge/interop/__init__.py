"""Converting checkpoints between lmforge and other formats (Hugging Face, GGUF)."""

from .huggingface import export_hf, import_hf

__all__ = ["export_hf", "import_hf"]
