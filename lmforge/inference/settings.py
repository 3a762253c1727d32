"""What a model directory says about generating with it, from meta.json's ``generation`` entry
(written by ``lmforge import``):

    {"bos_token_id": 1, "eos_token_ids": [2, 0], "pad_token_id": 2,
     "add_bos_token": false, "chat_template": "{% for message in messages %}..."}

Models trained with lmforge have no such entry: their end-of-sequence token is the
tokenizer's ``<|endoftext|>`` (or ``[SEP]``), see :func:`lmforge.tokenizers.eos_token_id`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GENERATION_KEY = "generation"


@dataclass
class GenerationSettings:
    eos_token_ids: list[int] = field(default_factory=list)
    """Generation stops at any of these (empty = never stops early)."""
    bos_token_id: int | None = None
    chat_template: str | None = None
    """A Jinja2 chat template (Hugging Face's ``apply_chat_template`` format), or None."""
    add_bos_token: bool = False
    """Whether the tokenizer puts the BOS token before a text by itself."""

    @property
    def eos_id(self) -> int | None:
        """The first stop id (the one padding finished rows), or None."""
        return self.eos_token_ids[0] if self.eos_token_ids else None


def generation_settings(meta: dict | None, tokenizer) -> GenerationSettings:
    """The settings of a model directory from its meta.json and tokenizer; without a
    ``generation`` entry the tokenizer's ``<|endoftext|>``/``[SEP]`` is the stop token."""
    gen = (meta or {}).get(GENERATION_KEY) or {}
    n = tokenizer.get_vocab_size(with_added_tokens=True)
    ok = lambda i: isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n  # noqa: E731
    eos = [i for i in gen.get("eos_token_ids") or [] if ok(i)]
    if not eos and "eos_token_ids" not in gen:
        from ..tokenizers import eos_token_id

        found = eos_token_id(tokenizer)
        eos = [] if found is None else [found]
    bos = gen.get("bos_token_id")
    template = gen.get("chat_template")
    return GenerationSettings(eos_token_ids=eos, bos_token_id=bos if ok(bos) else None,
                              chat_template=template if isinstance(template, str) else None,
                              add_bos_token=bool(gen.get("add_bos_token", False)))
