"""Chat under careless and hostile input: a message that does not fit the context is refused and
the session goes on; chat templates that would allocate without bound or run for minutes end
in one ConfigError within seconds."""

import io
import resource
import time

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from lmforge.errors import ConfigError
from lmforge.inference import ChatSession, GenerationConfig, render_chat
from lmforge.inference.chat import MessageTooLong
from lmforge.modeldir import save_model_dir
from lmforge.models import ModelConfig, build_model

SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]


@pytest.fixture(scope="module")
def tiny():
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE({c: i for i, c in enumerate(alphabet)}, []))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=tok.get_vocab_size(), d_model=32, n_layer=1, n_head=2,
                      context_length=96, positional="rope", norm="rmsnorm", activation="swiglu")
    return build_model(cfg).eval(), tok


def test_an_over_long_message_keeps_the_history(tiny):
    model, tok = tiny
    chat = ChatSession(model, tok, gen=GenerationConfig(max_new_tokens=4, temperature=0))
    reply = chat.ask("hi")
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": reply}]
    assert chat.messages == history
    with pytest.raises(MessageTooLong, match=r"that message is too long: \d+ tokens; the "
                       r"model's context is 96; shorten it"):
        chat.ask("x" * 200)
    assert chat.messages == history  # nothing dropped for a message that could not be sent
    chat.ask("ok")
    assert [m["content"] for m in chat.messages if m["role"] == "user"] == ["hi", "ok"]


def test_cli_chat_goes_on_after_an_over_long_message(tiny, tmp_path):
    from lmforge.cli.chat import chat

    model, tok = tiny
    save_model_dir(tmp_path / "m", model, tok)
    out, err = io.StringIO(), io.StringIO()
    session = chat(str(tmp_path / "m"), max_new_tokens=4, temperature=0,
                   stdin=io.StringIO(f"hi\n{'y' * 300}\nhello\n/exit\n"), stdout=out, stderr=err)
    assert "[that message is too long: " in err.getvalue()
    assert "the model's context is 96; shorten it]" in err.getvalue()
    assert ">>> hello\n" in out.getvalue()
    assert [m["content"] for m in session.messages if m["role"] == "user"] == ["hi", "hello"]


HOSTILE = {
    "string repetition": "{{ 'a' * 10**10 }}",
    "list repetition": "{{ ([1] * 10**9)|length }}",
    "huge range": "{% for i in range(10**9) %}{% endfor %}",
    "nested loops": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
                    "{% endfor %}",
    "nested loops over a list": "{% set l = range(100000)|list %}{% for i in l %}"
                                "{% for j in l %}{% endfor %}{% endfor %}",
    "deep recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "exponential macros": "{% macro f(n) %}{% if n < 40 %}{{ f(n + 1) }}{{ f(n + 1) }}"
                          "{% endif %}{% endmacro %}{{ f(0) }}",
    "huge filter argument": "{{ 'a'|center(10000000000) }}",
    "huge method argument": "{{ 'a'.ljust(10000000000) }}",
    "doubling by ~": "{% set a = 'x' * 1000000 %}" + "{% set a = a ~ a %}" * 12 + "{{ a }}",
    "doubling by +": "{% set a = 'x' * 1000000 %}" + "{% set a = a + a %}" * 12 + "{{ a }}",
    "huge output": "{% set a = 'x' * 1000000 %}{% for i in range(100000) %}{{ a }}{% endfor %}",
    "huge replace": "{% set a = 'x' * 1000000 %}{{ a.replace('x', a) }}",
    "huge join": "{% set a = 'x' * 1000000 %}{{ ([a] * 1000)|join }}",
    "huge power": "{{ 7 ** 100000000 }}",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_templates_fail_cleanly_and_quickly(name):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MB
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match="chat template") as e:
        render_chat([{"role": "user", "content": "hi"}], HOSTILE[name])
    assert time.monotonic() - t0 < 15
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - peak < 400
    assert "\n" not in str(e.value)


def test_real_templates_are_untouched_by_the_limits():
    long = "word " * 200_000  # a 1 MB message still renders (limits are 16 MB)
    text = render_chat([{"role": "user", "content": long}])
    assert text == f"<|im_start|>user\n{long}<|im_end|>\n<|im_start|>assistant\n"
    loop = ("{% for m in messages %}{{ loop.index }}:{{ m['content'] | upper }}"
            "{% if not loop.last %}|{% endif %}{% endfor %}{{ ' ' * 3 }}{{ 2 ** 10 }}")
    msgs = [{"role": "user", "content": f"m{i}"} for i in range(1000)]
    assert render_chat(msgs, loop).endswith("|1000:M999   1024")
