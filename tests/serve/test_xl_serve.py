"""A Transformer-XL decoder (``model.memory_length > 0``) served: each request keeps its own
segment memory (:class:`lmforge.serve.segment_rows.SegmentRows`), so a reply equals
lmforge's own generation with the memory (:func:`lmforge.inference.generate_tokens`) even when
prompt and reply run over several segments, when rows in different phases run side by side,
and when rows in the same phase (one prompt, several seeds) are stepped as one batch."""

import threading

import pytest
import torch

from lmforge.inference import GenerationConfig, generate
from lmforge.modeldir import load_model_dir, save_model_dir
from lmforge.models import ModelConfig, build_model
from lmforge.serve.engine import Engine, Request
from lmforge.serve.segment_rows import SegmentRows

from conftest import API_KEY, alone, byte_tokenizer
from live_server import LiveServer

SEGMENT = 12


def xl_decoder(vocab: int):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=vocab, d_model=32, n_layer=2, n_head=2, context_length=SEGMENT,
                      memory_length=2 * SEGMENT, positional="relative")
    model = build_model(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.5)  # replies that vary, so a wrong memory shows
    return model


@pytest.fixture(scope="module")
def xl_dir(tmp_path_factory):
    tok = byte_tokenizer()
    path = tmp_path_factory.mktemp("serve-xl") / "xl"
    save_model_dir(path, xl_decoder(tok.get_vocab_size()), tok)
    return path


def _run(engine: Engine, reqs: list[Request]) -> None:
    done = [threading.Event() for _ in reqs]
    for r, d in zip(reqs, done):
        r.sink = lambda e, d=d: e[0] in ("done", "error") and d.set()
        engine.submit(r)
    assert all(d.wait(60) for d in done)


def test_rows_in_any_phase_equal_each_request_alone(xl_dir):
    torch.set_num_threads(1)
    model = load_model_dir(xl_dir).model
    engine = Engine(model, max_batch=4)
    assert isinstance(engine.batch, SegmentRows) and engine.context is None
    try:
        g = torch.Generator().manual_seed(3)
        prompts = [torch.randint(0, 200, (n,), generator=g).tolist() for n in (5, 30, 17)]
        greedy = [Request(p, GenerationConfig(max_new_tokens=n, temperature=0))
                  for p, n in zip(prompts, (28, 9, 40))]  # prompt 30 > the context 12
        same = prompts[0]  # one prompt, two seeds: the same phase, stepped as one batch
        sampled = [Request(same, GenerationConfig(max_new_tokens=20, temperature=1.0, seed=s))
                   for s in (1, 2)]
        _run(engine, greedy + sampled)
        for r in greedy + sampled:
            want = generate(model, torch.tensor([r.ids]), r.gen)[0].tolist()
            assert r.generated == want
        assert sampled[0].generated != sampled[1].generated
    finally:
        engine.shutdown()


def test_served_over_http_with_a_prompt_longer_than_the_context(xl_dir):
    pytest.importorskip("fastapi")
    import httpx

    from lmforge.serve import Limits, create_app, load_all

    torch.set_num_threads(1)
    prompt = "To be, or not to be, that is the question"  # 41 tokens, segments of 12
    want = alone(load_model_dir(xl_dir), prompt, 30)
    live = LiveServer(create_app(load_all([str(xl_dir)], max_batch=2, max_queue=4),
                                 api_key=API_KEY, limits=Limits(max_tokens=100)))
    try:
        r = httpx.post(live.url + "/v1/completions", timeout=60,
                       headers={"Authorization": f"Bearer {API_KEY}"},
                       json={"model": "xl", "prompt": prompt, "max_tokens": 30,
                             "temperature": 0})
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        assert choice["text"] == want and len(want) > 0
    finally:
        live.stop()
