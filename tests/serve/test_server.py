"""The server through the official openai client and raw HTTP, on a tiny decoder: completions
and chat equal lmforge's own generation (greedy), streamed chunks reassemble to the whole
text, concurrent requests of different lengths decode in one batch exactly as alone, a client
that disconnects frees its slot, and bad requests get a 4xx with a message."""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch

from lmforge.inference import ChatSession, GenerationConfig, stream_ids
from lmforge.modeldir import load_model_dir

from conftest import alone

API_KEY = "test-key"  # as tests/serve/conftest.py serves it

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def ref(tiny_dir):
    return load_model_dir(tiny_dir)


def metric(server, name: str) -> float:
    text = httpx.get(server.url + "/metrics", headers=AUTH).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith((name + "{", name + " ")))


def test_completion_equals_generate(client, ref):
    r = client.completions.create(model="tiny", prompt="To be, or not", max_tokens=20,
                                  temperature=0)
    assert r.choices[0].text == alone(ref, "To be, or not", 20)
    assert r.usage.prompt_tokens == len("To be, or not")  # one token per byte
    assert r.usage.completion_tokens == 20 and r.choices[0].finish_reason == "length"


def test_chat_equals_chat_session_and_streams(client, ref):
    msgs = [{"role": "user", "content": "hello there"}]
    session = ChatSession.from_loaded(ref, reuse_cache=False)
    session.messages = list(msgs)
    want = "".join(stream_ids(ref.model, ref.tokenizer, session.prompt_ids(),
                              GenerationConfig(max_new_tokens=30, temperature=0),
                              session.stop_ids))
    r = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=30, temperature=0)
    assert r.choices[0].message.content == want
    chunks = list(client.chat.completions.create(model="tiny", messages=msgs, max_tokens=30,
                                                 temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == want and len(chunks) > 3
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens


def test_stop_string_seed_n_and_logprobs(client, ref):
    full = alone(ref, "abc", 30)
    stop = full[10:12]
    r = client.completions.create(model="tiny", prompt="abc", max_tokens=30, temperature=0,
                                  stop=[stop])
    assert r.choices[0].text == full[:full.find(stop)] and r.choices[0].finish_reason == "stop"
    kw = {"model": "tiny", "prompt": "abc", "max_tokens": 12, "temperature": 1.0, "seed": 7, "n": 2}
    a, b = client.completions.create(**kw), client.completions.create(**kw)
    assert [c.text for c in a.choices] == [c.text for c in b.choices]  # seeded: reproducible
    r = client.completions.create(model="tiny", prompt="abc", max_tokens=5, temperature=0,
                                  logprobs=3)
    lp = r.choices[0].logprobs
    with torch.no_grad():
        logits = ref.model(torch.tensor([ref.tokenizer.encode("abc").ids]))[0, -1]
    assert lp.token_logprobs[0] == pytest.approx(float(logits.log_softmax(-1).max()), abs=1e-4)
    assert len(lp.top_logprobs[0]) == 3


def test_concurrent_greedy_equals_alone(client, ref, server):
    prompts = ["a", "The quick brown fox jumps", "xy", "Lorem ipsum dolor sit amet, consectetur",
               "Hi!", "0123456789"]
    lengths = [25, 10, 40, 15, 30, 20]

    def ask(i):
        return client.completions.create(model="tiny", prompt=prompts[i], max_tokens=lengths[i],
                                         temperature=0).choices[0].text

    steps0 = metric(server, "lmforge_decode_steps_total")
    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(ask, range(6)))
    assert got == [alone(ref, p, n) for p, n in zip(prompts, lengths)]
    # shared forward passes: fewer decoding steps than tokens generated
    assert metric(server, "lmforge_decode_steps_total") - steps0 < sum(lengths) - 6


def test_disconnect_mid_stream_frees_the_slot(server):
    body = {"model": "tiny", "prompt": "x", "max_tokens": 100, "temperature": 0, "stream": True}
    before = metric(server, "lmforge_client_disconnects_total")
    with httpx.Client(timeout=10) as h, \
            h.stream("POST", server.url + "/v1/completions", json=body, headers=AUTH) as r:
        next(r.iter_lines())  # the first chunk arrived: the request runs
    for _ in range(100):
        if metric(server, "lmforge_running_slots") == 0 and \
                metric(server, "lmforge_client_disconnects_total") > before:
            break
        time.sleep(0.05)
    assert metric(server, "lmforge_running_slots") == 0
    assert metric(server, "lmforge_client_disconnects_total") == before + 1
    assert 'reason="cancelled"' in httpx.get(server.url + "/metrics", headers=AUTH).text


@pytest.mark.parametrize("body, status, words", [
    (b"{not json", 400, "not valid JSON"),
    ({"model": "nope", "prompt": "x"}, 404, "not served here"),
    ({"model": "tiny", "prompt": 5}, 400, "'prompt'"),
    ({"model": "tiny", "prompt": "x", "max_tokens": "ten"}, 400, "'max_tokens' must be an integer"),
    ({"model": "tiny", "prompt": "x", "max_tokens": -1}, 400, "'max_tokens' must be between"),
    ({"model": "tiny", "prompt": "x", "max_tokens": 10**9}, 400, "'max_tokens' must be between"),
    ({"model": "tiny", "prompt": "x", "temperature": "hot"}, 400, "'temperature' must be a number"),
    ({"model": "tiny", "prompt": "y" * 500}, 400, "context is 160 tokens"),
    ({"model": "tiny", "messages": "hi"}, 400, "'messages' must be"),
])
def test_bad_requests_get_a_4xx_with_a_message(server, body, status, words):
    path = "/v1/chat/completions" if isinstance(body, dict) and "messages" in body else \
        "/v1/completions"
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(server.url + path, content=content, headers=AUTH)
    assert r.status_code == status and words in r.json()["error"]["message"]


def test_api_key_required(server):
    r = httpx.post(server.url + "/v1/completions", json={"model": "tiny", "prompt": "x"})
    assert r.status_code == 401 and "API key" in r.json()["error"]["message"]
    assert httpx.get(server.url + "/health").status_code == 200
    assert httpx.get(server.url + "/v1/models", headers=AUTH).json()["data"][0]["id"] == "tiny"


def test_full_queue_answers_429(server):
    engine = server.app.state.models["tiny"].engine
    engine.max_batch, engine.max_queue = 0, 2  # admit nothing: requests wait in the queue
    body = {"model": "tiny", "prompt": "x", "max_tokens": 3, "temperature": 0}
    post = lambda: httpx.post(server.url + "/v1/completions", json=body, headers=AUTH,
                              timeout=20)
    try:
        waiting = [ThreadPoolExecutor(1).submit(post) for _ in range(2)]
        for _ in range(100):
            if engine.queue_depth == 2:
                break
            time.sleep(0.02)
        r = post()
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert "queue is full" in r.json()["error"]["message"]
    finally:
        engine.max_batch, engine.max_queue = 4, 8
        engine._wake.set()
    assert all(f.result().status_code == 200 for f in waiting)


def test_web_page_is_served(server):
    page = httpx.get(server.url + "/").text
    assert "chat-form" in page and httpx.get(server.url + "/static/app.js").status_code == 200
