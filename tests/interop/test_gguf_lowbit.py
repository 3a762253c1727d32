"""GGUF Q4_0 / Q4_1 / Q8_0 weights used directly (lmforge.interop.gguf_lowbit): the codes read
from the blocks against the ``gguf`` package's own dequantisation, the layers against
dequantise-then-matmul, and ``lmforge import --keep-quant`` end to end against the float
import of the same file."""

import pytest
import torch
from torch.nn import functional as F

gguf = pytest.importorskip("gguf")

from lmforge.cli.main import main
from lmforge.inference import GenerationConfig, generate
from lmforge.inference.compiled import enable_fast_decode
from lmforge.inference.quant import (
    Int4WeightLinear,
    dequantize_int4,
    load_for_inference,
    quantization_info,
)
from lmforge.interop.gguf_lowbit import q4_codes, q8_dequantized
from lmforge.modeldir import load_model_dir
from tests.interop.test_gguf import _hf_model, _write_gguf, tokenizer  # noqa: F401

Q = gguf.GGMLQuantizationType


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1"])
def test_q4_blocks_are_int4_group_32_exactly(kind):
    torch.manual_seed(0)
    w = (torch.randn(32, 128) * 0.05).numpy()
    raw = gguf.quants.quantize(w, Q[kind])  # (32, 4 blocks * bytes)
    ref = torch.from_numpy(gguf.quants.dequantize(raw, Q[kind]).reshape(32, 128).copy())
    q, s, z = q4_codes(raw, kind, 32)
    assert q.max() <= 15 and s.shape == (32, 4)
    assert torch.equal(dequantize_int4(q, s, z), ref)  # exact in float32
    x = torch.randn(3, 128)
    with torch.no_grad():
        exact = Int4WeightLinear(q, s, z, 32, use_kernel=False)(x)
        kernel = Int4WeightLinear(q, s, z, 32)(x)
    want = F.linear(x, ref)
    assert torch.allclose(exact, want, atol=1e-5, rtol=1e-5)
    # the kernel: bfloat16 activations, scales and zeros (measured 3e-3 of the largest output)
    assert float((kernel - want).abs().max() / want.abs().max()) < 1e-2


def test_q8_blocks_dequantise_exactly():
    w = (torch.randn(16, 64) * 0.1).numpy()
    raw = gguf.quants.quantize(w, Q.Q8_0)
    ref = gguf.quants.dequantize(raw, Q.Q8_0).reshape(16, 64)
    assert torch.equal(q8_dequantized(raw, 16), torch.from_numpy(ref.copy()))


def test_import_keep_quant_matches_the_float_import(tokenizer, tmp_path):  # noqa: F811
    """A llama GGUF (Q4_1 blocks: q/k rows permuted by llama.cpp; tied head from a Q4_1
    token_embd) imported keeping its codes: the same logits as the float import, up to the
    kernels' bfloat16 rounding; with the exact fallback up to float rounding."""
    hf = _write_gguf(tmp_path / "m.gguf", _hf_model("llama", True, width=128), tokenizer, "llama",
                     Q.Q4_1)
    del hf
    assert main(["import", str(tmp_path / "m.gguf"), "--out", str(tmp_path / "f")]) == 0
    assert main(["import", str(tmp_path / "m.gguf"), "--out", str(tmp_path / "q"),
                 "--keep-quant"]) == 0
    info = quantization_info(tmp_path / "q")
    assert info["mode"] == "gguf" and info["gguf_types"] == ["Q4_1"] and info["lm_head"] == "Q4_1"
    ref = load_model_dir(tmp_path / "f").model
    lm = load_for_inference(tmp_path / "q")
    assert isinstance(lm.model.backbone.layers[1].attn.k_proj, Int4WeightLinear)
    x = torch.randint(0, 320, (2, 12))
    with torch.no_grad():
        want, got = ref(x), lm.model(x)
    assert float((got - want).abs().max() / want.abs().max()) < 3e-2
    # the fast one-token step fuses the Q4_1 layers and decodes the same greedy tokens
    cfg = GenerationConfig(max_new_tokens=8, temperature=0, stop_at_eos=False)
    plain = generate(lm.model, x[:1], cfg)
    dec = enable_fast_decode(lm.model)
    assert dec is not None and all(None not in pair for pair in dec.fused)
    assert torch.equal(generate(lm.model, x[:1], cfg), plain)
    assert main(["import", str(tmp_path / "f"), "--out", str(tmp_path / "z"),
                 "--keep-quant"]) == 2  # not a .gguf file
