"""``lmforge serve --quant``: a float decoder quantised as it loads, and a stored quantised
directory, serve the same greedy text as lmforge's own generation on that quantised model;
``--quant`` on a model that is not a decoder is one line and exit code 2."""

import pytest
import torch

from lmforge.cli.main import main
from lmforge.inference.quant import Int8WeightLinear, load_for_inference
from lmforge.modeldir import save_model_dir
from lmforge.models import ModelConfig, build_model

from conftest import API_KEY, alone, byte_tokenizer
from live_server import LiveServer

pytest.importorskip("fastapi")


def _served_text(models, prompt: str, n: int) -> str:
    import httpx

    from lmforge.serve import Limits, create_app

    live = LiveServer(create_app(models, api_key=API_KEY, limits=Limits(max_tokens=100)))
    try:
        r = httpx.post(live.url + "/v1/completions", timeout=60,
                       headers={"Authorization": f"Bearer {API_KEY}"},
                       json={"model": "tiny", "prompt": prompt, "max_tokens": n,
                             "temperature": 0})
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["text"]
    finally:
        live.stop()


def test_serve_quantises_on_load_and_serves_a_quantised_directory(tiny_dir, tmp_path):
    from lmforge.serve import load_all

    torch.set_num_threads(1)
    want = alone(load_for_inference(tiny_dir, quant="int8"), "To be, or not", 16)
    models = load_all([str(tiny_dir)], max_batch=2, max_queue=4, quant="int8")
    assert isinstance(models["tiny"].lm.model.backbone.layers[0].attn.q_proj, Int8WeightLinear)
    assert _served_text(models, "To be, or not", 16) == want
    stored = tmp_path / "tiny"  # `lmforge quantize` output, served as it is
    assert main(["quantize", str(tiny_dir), "--out", str(stored), "--quant", "int8"]) == 0
    assert _served_text(load_all([str(stored)], max_batch=2, max_queue=4),
                        "To be, or not", 16) == want


def test_quant_on_an_encoder_is_one_line(tmp_path, capsys):
    tok = byte_tokenizer()
    torch.manual_seed(0)
    enc = build_model(ModelConfig(arch="encoder", vocab_size=tok.get_vocab_size(), d_model=32,
                                  n_layer=1, n_head=2, context_length=32))
    save_model_dir(tmp_path / "enc", enc, tok)
    assert main(["serve", str(tmp_path / "enc"), "--quant", "int8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--quant" in err[0] and "encoder" in err[0]
    assert main(["serve", str(tmp_path / "enc"), "--quant", "int3"]) == 2
