"""Chat templates at inference: the renderer (:mod:`lmforge.tokenizers.chat_template`, shared
with the instruction-tuning data), the text of special tokens, and the template stored with a
model directory."""

from __future__ import annotations

import json
from pathlib import Path

from ..tokenizers.chat_template import CHATML, Message, compile_template, render_chat

__all__ = ["CHATML", "Message", "compile_template", "find_chat_template", "render_chat",
           "special_token_text"]


def special_token_text(tokenizer, token_id: int | None) -> str:
    """The text of a token id ("" for None), to pass as ``bos_token``/``eos_token``."""
    if token_id is None:
        return ""
    return tokenizer.id_to_token(token_id) or ""


def find_chat_template(model_dir: str | Path) -> str | None:
    """A chat template stored with a model: ``chat_template.jinja``, the ``chat_template`` of
    ``tokenizer_config.json`` (Hugging Face) or of ``meta.json`` (top level, or under
    ``generation`` as imports write it); None when there is none."""
    d = Path(model_dir)
    if (d / "chat_template.jinja").is_file():
        return (d / "chat_template.jinja").read_text(encoding="utf-8")
    for name in ("tokenizer_config.json", "meta.json"):
        f = d / name
        if f.is_file():
            try:
                data = json.loads(f.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                continue
            if not isinstance(data, dict):
                continue
            # imported models keep it with their stop tokens under meta["generation"]
            t = data.get("chat_template") or (data.get("generation") or {}).get("chat_template")
            if isinstance(t, str) and t:
                return t
    return None
