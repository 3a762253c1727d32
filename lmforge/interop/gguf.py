"""GGUF (llama.cpp) checkpoints -> lmforge model directories: not implemented yet."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError


def import_gguf(src: str | Path, out_dir: str | Path, dtype: str | None = None) -> Path:
    raise ConfigError(f"{src}: GGUF import is not implemented yet; convert the model to a "
                      "Hugging Face directory first, or import a Hugging Face checkpoint "
                      "(GPT-2, Llama, Mistral, Qwen2)")
