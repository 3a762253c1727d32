"""Rendering a conversation with a model's chat template.

Chat templates are Jinja2 templates in Hugging Face's format (``tokenizer_config.json``'s
``chat_template``, GGUF's ``tokenizer.chat_template``). They are rendered as ``transformers``'
``apply_chat_template`` renders them: a sandboxed environment with ``trim_blocks`` and
``lstrip_blocks``, the ``loopcontrols`` extension, ``raise_exception``, ``strftime_now`` and a
``tojson`` filter that keeps non-ASCII characters, with ``messages``, ``add_generation_prompt``
and the special tokens (``bos_token``, ``eos_token``) as variables. A model without a template
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


@lru_cache(maxsize=16)
def compile_template(template: str):
    """The compiled Jinja2 template (cached); a syntax error raises ConfigError."""
    jinja2 = _jinja()
    from jinja2 import nodes
    from jinja2.ext import Extension
    from .template_limits import LimitedSandboxedEnvironment  # imports jinja2 (optional)

    class Generation(Extension):
        """``{% generation %}...{% endgeneration %}`` (marks assistant text for training
        masks in transformers): rendered as its body."""
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.Scope(body, lineno=lineno)

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
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise ConfigError(f"the chat template is not valid Jinja2 ({e})") from None


def render_chat(messages: list[Message], template: str | None = None, *,
                add_generation_prompt: bool = True, bos_token: str = "", eos_token: str = "",
                **variables: Any) -> str:
    """The conversation ``messages`` as the prompt text the model was trained on, ending with
    the start of an assistant turn when ``add_generation_prompt`` (as ``transformers``'
    ``tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)``).
    ``template`` None = ChatML. A template that raises (``raise_exception``) or breaks a resource
    limit (:mod:`lmforge.tokenizers.template_limits`) gives ConfigError."""
    jinja2 = _jinja()
    from jinja2.sandbox import SecurityError
    from .template_limits import render_limited  # imports jinja2 (optional)
    for m in messages:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ConfigError(f"a chat message needs a role and a content, got {m!r}")
    compiled = compile_template(template or CHATML)
    try:
        return render_limited(compiled, messages=messages,
                              add_generation_prompt=add_generation_prompt,
                              bos_token=bos_token, eos_token=eos_token, **variables)
    except SecurityError as e:
        raise ConfigError(f"the chat template (meta.json generation.chat_template, or the "
                          f"model's tokenizer_config.json) broke a resource limit: {e}; "
                          "fix or remove the template") from None
    except jinja2.exceptions.TemplateError as e:
        raise ConfigError(f"the chat template refused the conversation ({e})") from None
    except (OverflowError, RecursionError, MemoryError, TypeError, ValueError) as e:
        raise ConfigError(f"the chat template failed ({type(e).__name__}: {str(e)[:200]}); "
                          "fix or remove the template") from None
