"""Fixtures for the server tests: a tiny decoder model directory (byte-level tokenizer with the
ChatML tokens, weights scaled so greedy replies vary), and a live server on a free port in a
background thread, driven over HTTP."""


import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from live_server import LiveServer, free_port  # noqa: F401 (the tests' live server)

from lmforge.inference import GenerationConfig, generation_settings, stream_ids
from lmforge.modeldir import save_model_dir
from lmforge.models import ModelConfig, build_model

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
API_KEY = "test-key"


def byte_tokenizer() -> Tokenizer:
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE({c: i for i, c in enumerate(alphabet)}, []))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    return tok


def alone(lm, prompt: str, n: int) -> str:
    """lmforge's own greedy generation, one request at a time (the reference)."""
    eos = generation_settings(lm.meta, lm.tokenizer).eos_token_ids
    return "".join(stream_ids(lm.model, lm.tokenizer, lm.tokenizer.encode(prompt).ids,
                              GenerationConfig(max_new_tokens=n, temperature=0), eos))


def tiny_decoder(tok: Tokenizer, context: int = 160):
    """A random decoder whose output favours printable ASCII (so replies re-encode to the
    same tokens) and the ChatML end token."""
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
                   if "!" <= c <= "~" or c in ("Ġ", "<|im_end|>")]
        banned = torch.ones(cfg.vocab_size, dtype=torch.bool)
        banned[allowed] = False
        model.lm_head.weight[banned] = 0
    return model


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    tok = byte_tokenizer()
    path = tmp_path_factory.mktemp("serve") / "tiny"
    save_model_dir(path, tiny_decoder(tok), tok)
    return path


@pytest.fixture(scope="module")
def server(tiny_dir):
    """The tiny model served with an API key, a small batch and queue."""
    pytest.importorskip("fastapi")
    from lmforge.serve import Limits, create_app, load_all

    torch.set_num_threads(1)
    models = load_all([str(tiny_dir)], max_batch=4, max_queue=8)
    app = create_app(models, api_key=API_KEY, limits=Limits(max_tokens=100))
    live = LiveServer(app)
    yield live
    live.stop()


@pytest.fixture
def client(server):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0)
