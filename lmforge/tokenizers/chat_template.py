"""Rendering a conversation with a model's chat template.

Chat templates are Jinja2 templates in Hugging Face's format (``tokenizer_config.json``'s
``chat_template``, GGUF's ``tokenizer.chat_template``). They are rendered as ``transformers``'
``apply_chat_template`` renders them: a sandboxed environment with ``trim_blocks`` and
``lstrip_blocks``, the ``loopcontrols`` extension, ``raise_exception``, ``strftime_now`` and a
``tojson`` filter that keeps non-ASCII characters, ``dict`` and a ``namespace`` refusing
underscore names, with ``messages``, ``tools``, ``documents``, ``add_generation_prompt`` and
the special tokens (``bos_token``, ``eos_token``, ...) as variables; messages and tools reach
the template as plain JSON data, messages without their None-valued keys, and
``continue_final_message`` cuts the text after the last message as transformers does
(docs/chat-templates.md lists the families whose real templates are tested against it). A model without a template
gets ChatML (``<|im_start|>role\\ncontent<|im_end|>``).

This is the one place lmforge renders chat templates: ``lmforge chat`` (through
:mod:`lmforge.inference.chat_template`) and the instruction-tuning data
(:mod:`lmforge.data.chat`), so training and inference see the same text. It sits with the
tokenizers, as a Hugging Face tokenizer carries its ``chat_template``.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

from ..errors import ConfigError

CHATML = ("{% for message in messages %}"
          "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
          "{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
"""The template used when a model has none (ChatML, as SmolLM2 and Qwen2 use)."""

Message = dict[str, Any]
"""``{"role": "system" | "user" | "assistant", "content": str}``"""


def _jinja():
    try:
        import jinja2
    except ImportError:
        raise ConfigError("chat templates need the jinja2 package: pip install jinja2") from None
    return jinja2


class _TemplateDict:
    """The template's ``dict``: a call and ``fromkeys`` only (as transformers' ``TemplateDict``:
    no attribute access to the real type)."""

    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


def _namespace_class(jinja2):
    class TemplateNamespace(jinja2.utils.Namespace):
        """``namespace(...)`` refusing underscore names (as transformers' own)."""

        def __init__(*args, **kwargs):  # Jinja's signature trick: namespace(self=...) works
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                TemplateNamespace._check_name(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            TemplateNamespace._check_name(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check_name(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(
                    f"Chat templates cannot store underscore-prefixed attributes on a namespace, "
                    f"but got {name!r}. Please rename the attribute.")
    return TemplateNamespace


def strftime_now(fmt: str) -> str:
    """The template global ``strftime_now`` (Llama 3.1's "Today Date"); tests patch it."""
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=16)
def compile_template(template: str):
    """The compiled Jinja2 template (cached); a syntax error raises ConfigError. The
    environment is transformers' (``_cached_compile_jinja_template``) plus our limits."""
    jinja2 = _jinja()
    from jinja2 import nodes
    from jinja2.ext import Extension
    from .template_limits import LimitedSandboxedEnvironment  # imports jinja2 (optional)

    class Generation(Extension):
        """``{% generation %}...{% endgeneration %}`` (marks assistant text for training
        masks in transformers): a call block rendering its body, as transformers parses it."""
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = LimitedSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                      extensions=[Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.guard_filters()
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: strftime_now(fmt)  # looked up at call time
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _namespace_class(jinja2)
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise ConfigError(f"the chat template is not valid Jinja2 ({e})") from None


_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
_CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "


def _plain(value: Any) -> Any:
    """What the template sees: plain JSON types (as transformers' ``_plain_template_data``);
    None-valued message keys are dropped by :func:`_messages`."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    for base in (str, bool, int, float):
        if isinstance(value, base):
            return base(value)
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return f"<{type(value).__name__}>"


def _messages(messages: list[Message]) -> list[Message]:
    """A plain copy: None values dropped, reasoning aliased (as transformers does)."""
    out = []
    for m in messages:
        if not isinstance(m, dict) or "role" not in m or not (
                "content" in m or "tool_calls" in m):
            raise ConfigError(f"a chat message needs a role and a content (or tool_calls), "
                              f"got {m!r}")
        m = _plain({k: v for k, v in m.items() if v is not None})
        reasoning = next((m[k] for k in _REASONING_FIELDS if m.get(k) is not None), None)
        if reasoning is not None:
            m = {"thinking": reasoning, **m, "reasoning_content": reasoning}
        out.append(m)
    return out


def _tag_final(chat: list[Message], template: str, field: str) -> str:
    """Mark the final message's ``field`` for continue_final_message; returns its text."""
    final = chat[-1].get(field) if chat else None
    if final is None:
        raise ConfigError(f"continue_final_message: the final message has no {field!r} to "
                          "continue")
    fields = [f for f in _REASONING_FIELDS if chat[-1].get(f) == final] \
        if field in _REASONING_FIELDS else [field]
    if not any(f in template for f in fields):
        raise ConfigError(f"continue_final_message: the chat template does not use {field!r}")
    if not isinstance(final, str):
        raise ConfigError("continue_final_message: the final message's content must be text")
    for f in fields:
        chat[-1][f] = chat[-1][f] + _CONTINUE_TAG
    return final


def _cut_at_tag(text: str, final: str) -> str:
    if final.strip() not in text or _CONTINUE_TAG.strip() not in text:
        raise ConfigError("continue_final_message: the chat template dropped part of the final "
                          "message; it cannot be continued with this template")
    at = text.rindex(_CONTINUE_TAG.strip())
    return text[:at] if text[at: at + len(_CONTINUE_TAG)] == _CONTINUE_TAG else text[:at].rstrip()


def render_chat(messages: list[Message], template: str | None = None, *,
                add_generation_prompt: bool = True, bos_token: str = "", eos_token: str = "",
                tools: list[dict] | None = None, documents: list[dict] | None = None,
                continue_final_message: bool | str = False, **variables: Any) -> str:
    """The conversation ``messages`` as the prompt text the model was trained on, ending with
    the start of an assistant turn when ``add_generation_prompt``: exactly what
    ``transformers``' ``tokenizer.apply_chat_template(messages, tools=..., documents=...,
    add_generation_prompt=..., continue_final_message=..., tokenize=False, **variables)``
    gives (pass the tokenizer's other special tokens, e.g. ``pad_token``, as variables).
    ``tools`` are JSON schemas; ``continue_final_message`` (True = "content", or a field name)
    leaves the last message open. ``template`` None = ChatML. A template that raises
    (``raise_exception``) or breaks a resource limit
    (:mod:`lmforge.tokenizers.template_limits`) gives ConfigError."""
    if continue_final_message and add_generation_prompt:
        raise ConfigError("continue_final_message and add_generation_prompt cannot both be "
                          "set: continue the last message, or open a new assistant turn")
    if documents is not None and not all(isinstance(d, dict) for d in documents):
        raise ConfigError("documents must be a list of dicts (with 'title' and 'text' keys)")
    source = template or CHATML
    chat = _messages(messages)
    final = None
    if continue_final_message:
        field = continue_final_message if isinstance(continue_final_message, str) else "content"
        final = _tag_final(chat, source, field)
    text = _render(compile_template(source), messages=chat, tools=_plain(tools),
                   documents=_plain(documents), add_generation_prompt=add_generation_prompt,
                   bos_token=bos_token, eos_token=eos_token, **_plain(variables))
    return text if final is None else _cut_at_tag(text, final)


def _render(compiled, **variables: Any) -> str:
    """Render within the limits, every failure one ConfigError."""
    jinja2 = _jinja()
    from jinja2.sandbox import SecurityError
    from .template_limits import render_limited  # imports jinja2 (optional)
    try:
        return render_limited(compiled, **variables)
    except SecurityError as e:
        raise ConfigError(f"the chat template (meta.json generation.chat_template, or the "
                          f"model's tokenizer_config.json) broke a resource limit: {e}; "
                          "fix or remove the template") from None
    except jinja2.exceptions.TemplateError as e:
        raise ConfigError(f"the chat template refused the conversation ({e})") from None
    except (OverflowError, RecursionError, MemoryError, TypeError, ValueError) as e:
        raise ConfigError(f"the chat template failed ({type(e).__name__}: {str(e)[:200]}); "
                          "fix or remove the template") from None
