"""lmforge's chat-template renderer against ``transformers``' ``apply_chat_template(
tokenize=False)`` on the real templates of eight families (tests/tokenizers/chat_templates.py):
multi-turn, with and without a system message, with and without the generation prompt, with
tools and tool calls, continue_final_message, and the templates' own refusals."""

from datetime import datetime

import pytest

transformers = pytest.importorskip("transformers")

from tokenizers import Tokenizer, models  # noqa: E402

from lmforge.errors import ConfigError  # noqa: E402
from lmforge.tokenizers import chat_template as ours  # noqa: E402

from chat_templates import NO_SYSTEM, TEMPLATES, TOOLS  # noqa: E402

TURNS = [{"role": "user", "content": "Hi there, é ünïcode?"},
         {"role": "assistant", "content": "  Hello! How can I help?  "},
         {"role": "user", "content": "Tell me a joke."}]
SYSTEM = [{"role": "system", "content": "You are terse."}]
TOOL_LIST = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather at a place.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]
TOOL_CHAT = [{"role": "user", "content": "Weather in Paris?"},
             {"role": "assistant", "content": None, "tool_calls": [{"type": "function",
              "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
             {"role": "tool", "content": "22 C, sunny"}]
FIXED = datetime(2024, 7, 26, 12, 0, 0)


class _FixedDatetime(datetime):
    @classmethod
    def now(cls, tz=None):
        return FIXED


@pytest.fixture(scope="module")
def hf_tokenizer():
    vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>", "<pad>", "a"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>",
                                                eos_token="</s>", unk_token="<unk>",
                                                pad_token="<pad>")


@pytest.fixture(autouse=True)
def fixed_date(monkeypatch):
    """strftime_now deterministic on both sides (Llama 3.1 writes today's date)."""
    from transformers.utils import chat_template_utils
    monkeypatch.setattr(chat_template_utils, "datetime", _FixedDatetime)
    monkeypatch.setattr(ours, "strftime_now", lambda fmt: FIXED.strftime(fmt))


def _both(tok, template, messages, **kw):
    want = tok.apply_chat_template(messages, chat_template=template, tokenize=False, **kw)
    got = ours.render_chat(messages, template, add_generation_prompt=kw.pop(
        "add_generation_prompt", False), **kw, **tok.special_tokens_map)
    return got, want


CASES = [(f, s, g) for f in TEMPLATES for s in (False, True) for g in (False, True)
         if not (s and f in NO_SYSTEM)]


@pytest.mark.parametrize("family,system,generation_prompt", CASES)
def test_same_text_as_transformers(family, system, generation_prompt, hf_tokenizer):
    messages = (SYSTEM if system else []) + TURNS
    got, want = _both(hf_tokenizer, TEMPLATES[family], messages,
                      add_generation_prompt=generation_prompt)
    assert got == want
    assert "Tell me a joke." in got


@pytest.mark.parametrize("family", sorted(TOOLS))
def test_tools_and_tool_calls(family, hf_tokenizer):
    for messages in (TURNS, TOOL_CHAT):
        got, want = _both(hf_tokenizer, TEMPLATES[family], messages, tools=TOOL_LIST,
                          add_generation_prompt=True)
        assert got == want and "get_weather" in got
    assert "26 Jul 2024" in _both(hf_tokenizer, TEMPLATES["llama3.1"], TURNS)[0]


@pytest.mark.parametrize("family", ["chatml", "llama3", "qwen2.5"])
def test_continue_final_message(family, hf_tokenizer):
    messages = TURNS + [{"role": "assistant", "content": "Why did the"}]
    got, want = _both(hf_tokenizer, TEMPLATES[family], messages, continue_final_message=True)
    assert got == want and got.endswith("Why did the")


@pytest.mark.parametrize("family,messages,message", [
    ("gemma2", SYSTEM + TURNS, "System role not supported"),
    ("gemma2", TURNS[:1] + TURNS[:1], "Conversation roles must alternate"),
    ("mistral", [{"role": "system", "content": "x"}] + TURNS, "Conversation roles must alternate"),
    ("mistral", TURNS[:1] + [{"role": "tool", "content": "x"}], "Only user and assistant")])
def test_template_refusals_surface_as_one_error(family, messages, message, hf_tokenizer):
    from jinja2.exceptions import TemplateError
    with pytest.raises(TemplateError, match=message):
        hf_tokenizer.apply_chat_template(messages, chat_template=TEMPLATES[family],
                                         tokenize=False)
    with pytest.raises(ConfigError, match=f"chat template refused the conversation "
                                          f"\\({message}"):
        ours.render_chat(messages, TEMPLATES[family])


def test_environment_globals_match(hf_tokenizer):
    """dict(), namespace() (refusing underscore names), loopcontrols, tojson's arguments and a
    {% generation %} block render as in transformers."""
    t = ("{% set ns = namespace(n=0) %}{% for m in messages %}{% if loop.index > 2 %}{% break %}"
         "{% endif %}{% set ns.n = ns.n + 1 %}{% generation %}{{ m.content }}{% endgeneration %}"
         "{% endfor %}|{{ ns.n }}|{{ dict(a=1, b=[2]) | tojson(indent=2, sort_keys=True) }}"
         "|{{ dict.fromkeys(['x']) | tojson(separators=(',', ':')) }}")
    got, want = _both(hf_tokenizer, t, TURNS)
    assert got == want
    with pytest.raises(ConfigError, match="underscore"):
        ours.render_chat(TURNS, "{% set ns = namespace(_x=1) %}")
