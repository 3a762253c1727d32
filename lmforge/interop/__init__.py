"""Converting checkpoints between lmforge and other formats (Hugging Face, GGUF)."""
