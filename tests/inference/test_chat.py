"""Chat templates render as transformers' apply_chat_template renders them; a ChatSession keeps
the history, drops the oldest exchanges when the context would overflow, and stops at the
model's end-of-turn token; `lmforge chat` reads piped stdin (/reset, /exit)."""

import io

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from lmforge.errors import ConfigError, GenerationError
from lmforge.inference import ChatSession, GenerationConfig, GenerationSettings, render_chat
from lmforge.inference.chat_template import CHATML
from lmforge.modeldir import save_model_dir
from lmforge.models import ModelConfig, build_model

SMOLLM2 = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
           "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
           "Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
           "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
           "{{ '<|im_start|>assistant\n' }}{% endif %}")
LLAMA3_LIKE = """{{- bos_token }}
{%- for message in messages %}
    {%- if message['role'] not in ['system', 'user', 'assistant'] %}
        {{- raise_exception('unknown role ' + message['role']) }}
    {%- endif %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}
{%- if tools %}{{ tools | tojson }}{%- endif %}"""
CONVERSATION = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Où est Paris ?"},
                {"role": "assistant", "content": " In France. "},
                {"role": "user", "content": "And Berlin?"}]
SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]


@pytest.mark.parametrize("template", [SMOLLM2, LLAMA3_LIKE, None])
@pytest.mark.parametrize("generation_prompt", [True, False])
def test_rendering_matches_transformers(template, generation_prompt):
    transformers = pytest.importorskip("transformers")
    from transformers.utils.chat_template_utils import render_jinja_template

    for messages in (CONVERSATION, CONVERSATION[1:2]):
        want = render_jinja_template(conversations=[messages], chat_template=template or CHATML,
                                     add_generation_prompt=generation_prompt,
                                     bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                     tools=None)[0][0]
        got = render_chat(messages, template, add_generation_prompt=generation_prompt,
                          bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", tools=None)
        assert got == want
    with_tools = render_chat(CONVERSATION[1:2], LLAMA3_LIKE, tools=[{"name": "é"}])
    assert with_tools.endswith('[{"name": "é"}]')  # tojson keeps non-ASCII characters


def test_chatml_fallback_and_errors():
    assert render_chat([{"role": "user", "content": "hi"}]) == \
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    with pytest.raises(ConfigError, match="unknown role tool"):
        render_chat([{"role": "tool", "content": "x"}], LLAMA3_LIKE)
    with pytest.raises(ConfigError, match="not valid Jinja2"):
        render_chat([{"role": "user", "content": "x"}], "{% for %}")
    with pytest.raises(ConfigError, match="role and a content"):
        render_chat([{"content": "x"}])
    gen = "{% for m in messages %}{% generation %}{{ m['content'] }}{% endgeneration %}{% endfor %}"
    assert render_chat([{"role": "user", "content": "x"}], gen) == "x"


def _byte_tokenizer() -> Tokenizer:
    """One token per byte (so token counts are predictable) plus ChatML's special tokens."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE({c: i for i, c in enumerate(alphabet)}, []))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    return tok


@pytest.fixture(scope="module")
def tiny():
    tok = _byte_tokenizer()
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=tok.get_vocab_size(), d_model=32, n_layer=1, n_head=2,
                      context_length=96, positional="rope", norm="rmsnorm", activation="swiglu")
    return build_model(cfg).eval(), tok


def test_session_keeps_history_and_drops_oldest_exchanges(tiny):
    model, tok = tiny
    notices = []
    chat = ChatSession(model, tok, gen=GenerationConfig(max_new_tokens=12, temperature=0),
                       system="sys", on_notice=notices.append)
    end = tok.token_to_id("<|im_end|>")
    assert chat.template is None and end in chat.stop_ids  # ChatML: <|im_end|> ends a turn
    first = "".join(chat.send("hello there"))
    assert chat.messages == [{"role": "user", "content": "hello there"},
                             {"role": "assistant", "content": first}]
    assert not notices
    for i in range(4):  # each exchange is ~45 tokens: the 96-token context holds one
        reply = chat.ask(f"question {i}")
        assert len(chat.prompt_ids()) <= chat.context
        assert chat.messages[-2:] == [{"role": "user", "content": f"question {i}"},
                                      {"role": "assistant", "content": reply}]
        assert chat.messages[0]["role"] == "user"
    assert notices and "dropped the 2 oldest message(s)" in notices[0] and chat.dropped >= 2
    assert chat.render().startswith("<|im_start|>system\nsys<|im_end|>\n")
    chat.reset()
    assert chat.messages == [] and chat.conversation() == [{"role": "system", "content": "sys"}]
    with pytest.raises(GenerationError, match="too long"):
        chat.ask("x" * 200)
    assert chat.messages == []


def test_session_stops_at_the_end_of_turn_token(tiny):
    model, tok = tiny
    settings = GenerationSettings(eos_token_ids=[])
    free = ChatSession(model, tok, settings=settings, template="{{ messages[-1]['content'] }}",
                       gen=GenerationConfig(max_new_tokens=10, temperature=0))
    ids = tok.encode("hello").ids
    free_ids = tok.encode(free.ask("hello"), add_special_tokens=False).ids
    assert len(free_ids) == 10
    stop = free_ids[4]  # make the fifth generated token an end-of-turn token
    unused = next(i for i in range(tok.get_vocab_size()) if i not in free_ids)
    settings = GenerationSettings(eos_token_ids=[unused, stop])
    chat = ChatSession(model, tok, settings=settings, template="{{ messages[-1]['content'] }}",
                       gen=GenerationConfig(max_new_tokens=10, temperature=0))
    stopped = tok.encode(chat.ask("hello"), add_special_tokens=False).ids
    assert stopped == free_ids[:free_ids.index(stop)]
    assert ids  # the prompt itself is untouched


def test_cli_chat_reads_piped_stdin(tiny, tmp_path, monkeypatch, capsys):
    from lmforge.cli.chat import chat
    from lmforge.cli.main import main

    model, tok = tiny
    save_model_dir(tmp_path / "m", model, tok)
    out, err = io.StringIO(), io.StringIO()
    session = chat(str(tmp_path / "m"), max_new_tokens=5, temperature=0,
                   stdin=io.StringIO("hi\n\n/reset\nhello\n/exit\nnever read\n"), stdout=out,
                   stderr=err)
    text = out.getvalue()
    assert text.startswith(">>> hi\n") and "[conversation cleared]\n>>> hello\n" in text
    assert "never read" not in text and "ChatML" in err.getvalue()
    assert [m["content"] for m in session.messages if m["role"] == "user"] == ["hello"]
    assert session.cache is not None  # the KV cache is kept between turns by default
    monkeypatch.setattr("sys.stdin", io.StringIO("hi\n"))  # end of input also quits
    assert main(["chat", str(tmp_path / "m"), "--temperature", "0", "--max-new-tokens", "3",
                 "--seed", "1"]) == 0
    assert capsys.readouterr().out.startswith(">>> hi\n")
    monkeypatch.setattr("sys.stdin", io.StringIO("hi\n"))
    assert main(["chat", str(tmp_path / "m"), "--temperature", "0", "--max-new-tokens", "3",
                 "--no-reuse-cache"]) == 0
    assert capsys.readouterr().out.startswith(">>> hi\n")


def _chatty(tok, context: int):
    """A random model with large weights (replies vary instead of repeating one token) whose
    output layer only favours printable ASCII and <|im_end|>, so a reply re-encodes to the very
    tokens generated (a byte-level tokenizer round-trips them)."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=tok.get_vocab_size(), d_model=32, n_layer=2, n_head=2,
                      n_kv_head=1, context_length=context, positional="rope", norm="rmsnorm",
                      activation="swiglu", tie_embeddings=False)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.5)
        allowed = [i for c, i in tok.get_vocab().items()
                   if "!" <= c <= "~" or c in ("Ġ", "<|im_end|>")]  # Ġ: a space
        banned = torch.ones(cfg.vocab_size, dtype=torch.bool)
        banned[allowed] = False
        model.lm_head.weight[banned] = 0
    return model


@pytest.fixture
def chatty():
    """The model and tokenizer, run on one thread: these tensors are tiny, and threads that
    wait on each other (a busy machine) made the tests 50 times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tok = _byte_tokenizer()
    yield _chatty(tok, 512), tok
    torch.set_num_threads(threads)


class _Fed:
    """Counts the tokens each forward pass of ``model`` is given."""

    def __init__(self, model):
        self.calls: list[int] = []
        self.handle = model.register_forward_pre_hook(
            lambda module, args: self.calls.append(args[0].shape[1]))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def _converse(model, tok, turns, reuse, cut=None, stop=(), **kw):
    """Replies to ``turns`` (greedy); turn ``cut`` is closed after its first piece."""
    chat = ChatSession(model, tok, reuse_cache=reuse, system="sys", **kw,
                       gen=GenerationConfig(max_new_tokens=16, temperature=0, stop=list(stop)))
    replies = []
    for i, text in enumerate(turns):
        if i == cut:
            stream = chat.send(text)
            next(stream)
            stream.close()  # the partial reply joins the history
            replies.append(chat.messages[-1]["content"])
        else:
            replies.append(chat.ask(text))
    return replies, chat


def test_reusing_the_cache_across_turns_gives_the_same_replies(chatty):
    model, tok = chatty
    turns = ["hello there", "what now?", "and then"]
    without, plain = _converse(model, tok, turns, False)
    with_reuse, chat = _converse(model, tok, turns, True)
    assert with_reuse == without and len(set(with_reuse)) == len(turns)
    assert chat.messages == plain.messages and plain.cache is None
    assert chat.cache.kept > 0 and chat.cache.max_len <= chat.context
    # replies cut short: a stop string (the cache has run past the reply's text, and is cut
    # back next turn), and a stream closed early
    stop = [without[0][4:6]]
    for cut in (None, 1):
        without, plain = _converse(model, tok, turns, False, cut, stop)
        with_reuse, chat = _converse(model, tok, turns, True, cut, stop)
        assert with_reuse == without and chat.messages == plain.messages
    assert len(without[0]) == 4  # turn 1 was cut at the stop string


def test_a_reply_cut_at_a_stop_string_cuts_the_cache_back(chatty):
    model, tok = chatty
    free, _ = _converse(model, tok, ["hello there"], False)
    chat = ChatSession(model, tok, system="sys", gen=GenerationConfig(
        max_new_tokens=16, temperature=0, stop=[free[0][4:6]]))
    chat.messages.append({"role": "user", "content": "hello there"})
    first = len(chat.prompt_ids())
    chat.messages.clear()
    reply = chat.ask("hello there")
    assert reply == free[0][:4] and len(chat.cache.ids) == first + 5  # fed past the text
    chat.ask("what now?")
    assert chat.cache.kept == first + 4  # cut back to the reply as the history holds it


def test_turn_two_feeds_only_the_new_suffix(chatty):
    model, tok = chatty
    chat = ChatSession(model, tok, system="sys",
                       gen=GenerationConfig(max_new_tokens=16, temperature=0))
    chat.messages.append({"role": "user", "content": "hello there"})
    first = chat.prompt_ids()
    chat.messages.clear()
    reply = chat.ask("hello there")
    reply_ids = tok.encode(reply, add_special_tokens=False).ids
    chat.messages.append({"role": "user", "content": "what now?"})
    second = chat.prompt_ids()
    chat.messages.pop()
    with _Fed(model) as fed:
        chat.ask("what now?")
    # the cache held the first prompt and the reply (less its last token when it was cut at
    # max_new_tokens; an end-of-turn token is never fed)
    kept = len(first) + min(len(reply_ids), 15)
    assert chat.cache.kept == kept and fed.calls[0] == len(second) - kept
    suffix = tok.encode("<|im_end|>\n<|im_start|>user\nwhat now?<|im_end|>\n"
                        "<|im_start|>assistant\n").ids  # the end of turn 1, then turn 2
    assert fed.calls[0] <= len(suffix) + 1 < len(second) // 2
    assert all(n == 1 for n in fed.calls[1:])  # then one token a step
    plain = ChatSession(model, tok, system="sys", reuse_cache=False,
                        gen=GenerationConfig(max_new_tokens=16, temperature=0))
    plain.ask("hello there")
    with _Fed(model) as fed_plain:
        plain.ask("what now?")
    assert fed_plain.calls[0] == len(second)  # without reuse: the whole prompt again


def test_reuse_with_history_dropped_and_a_template_that_rerenders(chatty):
    model, tok = chatty
    small = _chatty(tok, 128)  # ~45 tokens an exchange: the oldest are dropped
    turns = [f"question {i}" for i in range(6)]
    with_reuse, chat = _converse(small, tok, turns, True)
    without, plain = _converse(small, tok, turns, False)
    assert with_reuse == without and chat.messages == plain.messages
    assert chat.dropped >= 4 and chat.dropped == plain.dropped
    assert chat.cache.max_len <= 128 and len(chat.cache.ids) <= 128
    # a template whose start changes every turn: the cache is cut back to the common prefix
    counting = "turns: {{ messages | length }}\n" + CHATML
    with_reuse, chat = _converse(model, tok, turns[:3], True, template=counting)
    without, _ = _converse(model, tok, turns[:3], False, template=counting)
    assert with_reuse == without and chat.cache.kept == len("turns: ")


def test_reset_starts_the_cache_afresh(chatty):
    model, tok = chatty
    _, chat = _converse(model, tok, ["hello there", "what now?"], True)
    assert chat.cache.ids
    chat.reset()
    assert chat.cache.cache is None and chat.cache.ids == []
    with _Fed(model) as fed:
        reply = chat.ask("and then")
    fresh, _ = _converse(model, tok, ["and then"], False)
    assert [reply] == fresh and chat.cache.kept == 0
    first_prompt = len(tok.encode("<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\nand "
                                  "then<|im_end|>\n<|im_start|>assistant\n").ids)
    assert fed.calls[0] == first_prompt
