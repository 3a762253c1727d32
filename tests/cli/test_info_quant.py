"""``lmforge info`` on a directory written by ``lmforge quantize``: the parameter count of the
float model (the quantised linear layers are buffers, not parameters) and the bytes of the
weights as loaded (codes, scales, the float embeddings and norms; tied weights once, never the
RoPE tables built at load), against the tensors model.safetensors holds."""

import json

import pytest
import torch
from safetensors import safe_open

from lmforge.cli.main import main
from lmforge.modeldir import save_model_dir
from lmforge.models import ModelConfig, build_model
from lmforge.tokenizers import train_tokenizer


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("infoq")
    corpus = root / "corpus.txt"
    corpus.write_text("the cat sat on the mat.\n" * 20, encoding="utf-8")
    tok = train_tokenizer([corpus], kind="char")
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=tok.get_vocab_size(), context_length=256,
                                    d_model=64, n_layer=2, n_head=4, n_kv_head=2, d_ff=128,
                                    activation="swiglu", norm="rmsnorm", positional="rope"))
    float_dir = save_model_dir(root / "float", model, tok, {"task": "causal-lm"})
    out = {"float": (float_dir, model.num_params())}
    for mode in ("int8", "int4"):
        assert main(["quantize", str(float_dir), "--out", str(root / mode), "--quant", mode]) == 0
        out[mode] = (root / mode, model.num_params())
    return out


def _stored_bytes(path) -> int:
    """Bytes of every tensor in model.safetensors as loaded (the reference: what the directory
    holds; the quantisation scales and zeros, stored as float32, are held in bfloat16)."""
    total = 0
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        for k in f.keys():  # noqa: SIM118 (safe_open is not iterable)
            t = f.get_tensor(k)
            total += t.numel() * (2 if k.endswith(("scales", "zeros"))
                                  else t.element_size())
    return total


@pytest.mark.parametrize("kind", ["float", "int8", "int4"])
def test_info_reports_the_float_parameter_count_and_the_stored_weight_bytes(dirs, kind,
                                                                            tmp_path, capsys):
    path, n_params = dirs[kind]
    report = tmp_path / "info.json"
    assert main(["info", str(path), "--json", str(report)]) == 0
    shown = capsys.readouterr().out
    got = json.loads(report.read_text())
    assert got["parameters"] == n_params  # not the handful of float parameters left
    assert f"{n_params:,}" in shown
    assert got["weight_bytes"] == _stored_bytes(path)
    if kind == "float":
        assert got["quantization"] is None and "quantised" not in shown
    else:
        assert got["quantization"]["mode"] == kind
        assert f"quantised {kind}" in shown
        assert got["weight_bytes"] < 0.4 * _stored_bytes(dirs["float"][0])
