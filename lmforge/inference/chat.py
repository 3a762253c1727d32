"""A conversation with a chat model: the history is rendered with the model's chat template
(:mod:`lmforge.inference.chat_template`) for every turn, and the reply streams until one of the
model's end-of-turn tokens.

    lm = load_model_dir("runs/smollm2")
    chat = ChatSession.from_loaded(lm, gen=GenerationConfig(max_new_tokens=256, temperature=0))
    for piece in chat.send("What is the capital of France?"):
        print(piece, end="", flush=True)

When the conversation and the reply (``max_new_tokens``) would not fit in the model's context,
the oldest exchanges are dropped from the history (``on_notice`` is told); if the newest
message alone leaves too little room, the reply is shortened to the room left.

The KV cache is kept between turns (``reuse_cache=True``, a
:class:`lmforge.inference.generate.PrefixCache`): each turn's prompt starts with the last one
(and its reply), so only the tokens after the longest common prefix — usually the new message
and the template's turn markers — are run through the model. Where the rendered prompt differs
from what the cache holds (history dropped, a template that re-renders earlier turns), the
cache is cut back to the common prefix; greedy replies are the same as without reuse.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

from torch import nn

from ..errors import GenerationError
from .chat_template import Message, render_chat, special_token_text
from .generate import GenerationConfig, PrefixCache, stream_ids
from .settings import GenerationSettings, effective_sampling, generation_settings

CHATML_END = "<|im_end|>"


class MessageTooLong(GenerationError):
    """A user message that does not fit the model's context even alone: it is left out of the
    history, which stays as it was, so the conversation can go on."""


class ChatSession:
    def __init__(self, model: nn.Module, tokenizer, *, settings: GenerationSettings | None = None,
                 system: str | None = None, gen: GenerationConfig | None = None,
                 template: str | None = None, on_notice: Callable[[str], None] | None = None,
                 reuse_cache: bool = True):
        self.model, self.tokenizer = model, tokenizer
        self.settings = settings or GenerationSettings()
        self.template = template or self.settings.chat_template  # None = ChatML
        self.system = system
        self.gen = gen or GenerationConfig(max_new_tokens=256, temperature=0.7, top_p=0.9)
        self.on_notice = on_notice or (lambda message: None)
        self.messages: list[Message] = []
        """The exchanges so far (user, assistant, user, ...), without the system message."""
        self.stop_ids = list(self.settings.eos_token_ids)
        end = tokenizer.token_to_id(CHATML_END)
        if self.template is None and end is not None and end not in self.stop_ids:
            self.stop_ids.append(end)  # ChatML ends a turn with <|im_end|>
        self.dropped = 0
        """Messages dropped from the history so far to fit the context."""
        self.cache = PrefixCache(model) if reuse_cache else None
        """The KV cache kept between turns (None: every turn prefills the whole prompt)."""

    @classmethod
    def from_loaded(cls, lm, **kw) -> "ChatSession":
        """A session over a :class:`lmforge.modeldir.LoadedModel`, with the stop tokens and chat
        template its directory records; without ``gen``, sampling follows the model's
        recommended settings (:func:`lmforge.inference.settings.effective_sampling`)."""
        if kw.get("gen") is None:
            kw["gen"] = effective_sampling(lm.meta).apply(GenerationConfig(max_new_tokens=256))
        return cls(lm.model, lm.tokenizer, settings=generation_settings(lm.meta, lm.tokenizer),
                   **kw)

    @property
    def context(self) -> int:
        return self.model.cfg.context_length

    def conversation(self) -> list[Message]:
        """The messages the template renders: the system message (if any), then the history."""
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + self.messages

    def render(self, add_generation_prompt: bool = True) -> str:
        return render_chat(self.conversation(), self.template,
                           add_generation_prompt=add_generation_prompt,
                           bos_token=special_token_text(self.tokenizer, self.settings.bos_token_id),
                           eos_token=special_token_text(self.tokenizer, self.settings.eos_id))

    def prompt_ids(self) -> list[int]:
        """The rendered conversation as token ids (the template writes any BOS itself)."""
        return self.tokenizer.encode(self.render(), add_special_tokens=False).ids

    def _fit(self) -> tuple[list[int], int]:
        """(prompt ids, max new tokens) that fit the context, dropping the oldest exchanges."""
        want = self.gen.max_new_tokens
        before = self.messages[:-1]  # the history as it was, should the message not fit
        ids = self.prompt_ids()
        dropped = 0
        while len(ids) + want > self.context and len(self.messages) > 1:
            n = 2 if len(self.messages) > 2 else 1  # a user message and the reply to it
            del self.messages[:n]
            dropped += n
            ids = self.prompt_ids()
        if len(ids) >= self.context:
            self.messages[:] = before
            raise MessageTooLong(f"that message is too long: {len(ids)} tokens; the model's "
                                 f"context is {self.context}; shorten it")
        if dropped:
            self.dropped += dropped
            self.on_notice(f"the conversation no longer fits the model's {self.context}-token "
                           f"context: dropped the {dropped} oldest message(s)")
        room = self.context - len(ids)
        if room < want:
            self.on_notice(f"only {room} tokens of the {self.context}-token context are left "
                           "for the reply")
        return ids, min(want, room)

    def send(self, text: str) -> Iterator[str]:
        """Add a user message and yield the reply as it is generated; the reply joins the
        history when the iterator ends (also when it is closed early)."""
        self.messages.append({"role": "user", "content": text})
        ids, n = self._fit()
        pieces: list[str] = []
        try:
            for piece in stream_ids(self.model, self.tokenizer, ids,
                                    replace(self.gen, max_new_tokens=n), self.stop_ids,
                                    cache=self.cache):
                pieces.append(piece)
                yield piece
        finally:
            self.messages.append({"role": "assistant", "content": "".join(pieces)})

    def ask(self, text: str) -> str:
        """:meth:`send`, returning the whole reply."""
        return "".join(self.send(text))

    def reset(self) -> None:
        """Forget the history (the system message stays) and the KV cache."""
        self.messages.clear()
        if self.cache is not None:
            self.cache.reset()
