"""The fast decoding step (lmforge.inference.compiled) and fused projections
(lmforge.inference.quant.fuse) against the model's own forward: same greedy tokens, logits
within a stated tolerance; the one-line fallbacks."""

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from torch import nn

from lmforge.cli.generate import generate as cli_generate
from lmforge.inference import GenerationConfig, generate
from lmforge.inference import compiled as fast_mod
from lmforge.inference.compiled import (
    FastDecoder,
    compile_unavailable,
    disable_fast_decode,
    enable_fast_decode,
)
from lmforge.inference.quant import Int4WeightLinear, Int8WeightLinear, quantize_model
from lmforge.inference.quant.fuse import fuse_linears
from lmforge.modeldir import save_model_dir
from lmforge.models import ModelConfig, build_model

LOGIT_TOL = 1e-4
"""Max |fast - model| / max |model| of one step's logits. The uncompiled step runs the same
kernels on the same numbers (measured 0.0 for int4 on SmolLM2-135M); the compiled one may fuse
element-wise ops (float32 rounding only); the quantised kernels themselves are not changed."""


def _model(mode: str | None, seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    cfg = dict(arch="decoder", vocab_size=320, context_length=64, d_model=128, n_layer=2,
               n_head=4, n_kv_head=2, d_ff=128, activation="swiglu", norm="rmsnorm",
               positional="rope", tie_embeddings=True, init_std=0.2)
    m = build_model(ModelConfig(**{**cfg, **kw})).eval()
    return quantize_model(m, mode, 32) if mode else m


def _steps(model, step, prompt: torch.Tensor, n: int) -> torch.Tensor:
    """Logits (n, B, V) of n greedy steps after the prompt, each step through ``step``."""
    kv = model.new_cache(prompt.shape[0], max_len=prompt.shape[1] + n)
    with torch.no_grad():
        logits = model(prompt, cache=kv, last_only=True)[:, -1]
        out = []
        for _ in range(n):
            nxt = logits.argmax(-1)[:, None]
            logits = step(nxt, kv)
            out.append(logits)
    return torch.stack(out)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("kind", [Int4WeightLinear, Int8WeightLinear, nn.Linear])
def test_fused_projection_equals_separate_layers(kind):
    torch.manual_seed(1)
    lins = [nn.Linear(64, n, bias=True) for n in (128, 64, 64)]
    if kind is Int4WeightLinear:
        lins = [Int4WeightLinear.from_linear(x, 32) for x in lins]
    elif kind is Int8WeightLinear:
        lins = [Int8WeightLinear.from_linear(x) for x in lins]
    fused = fuse_linears(lins)
    assert type(fused) is kind and fused.out_features == 256
    x = torch.randn(3, 64)
    want = torch.cat([x_(x) for x_ in lins], -1)
    if kind is nn.Linear:
        torch.testing.assert_close(fused(x), want, rtol=1e-5, atol=1e-6)
    else:  # the same kernel on stacked rows: bit for bit
        assert torch.equal(fused(x), want)
    assert fuse_linears([lins[0], nn.Identity()]) is None  # mixed kinds: not fused
    if kind is Int4WeightLinear:  # the CPU layout packs rows in blocks whose size depends on
        parts = [Int4WeightLinear.from_linear(nn.Linear(64, n), 32) for n in (64, 32, 32)]
        assert fuse_linears(parts) is None  # N: 64 + 32 + 32 rows do not stack (refused)


@pytest.mark.parametrize("mode", ["int4", "int8", None])
@pytest.mark.parametrize("fuse", [True, False])
def test_fast_step_matches_model(mode, fuse):
    model = _model(mode)
    prompt = torch.randint(0, 320, (2, 5))
    ref = _steps(model, lambda ids, kv: model(ids, cache=kv, last_only=True)[:, -1], prompt, 6)
    dec = FastDecoder(model, fuse=fuse)
    got = _steps(model, dec, prompt, 6)
    assert _rel(got, ref) <= LOGIT_TOL
    assert torch.equal(got.argmax(-1), ref.argmax(-1))


def test_generate_with_fast_decode_same_greedy_tokens():
    model = _model("int4", seed=2)
    prompt = torch.randint(0, 320, (1, 7))
    cfg = GenerationConfig(max_new_tokens=20, temperature=0, stop_at_eos=False)
    want = generate(model, prompt, cfg)
    assert enable_fast_decode(model) is not None
    calls = []
    real = type(model.fast_decode).__call__
    model.fast_decode.__class__ = type("Spy", (FastDecoder,), {
        "__call__": lambda self, ids, kv: calls.append(1) or real(self, ids, kv)})
    got = generate(model, prompt, cfg)
    disable_fast_decode(model)
    assert torch.equal(got, want) and len(calls) == 19  # every step but the prefill


def test_unsupported_model_falls_back_with_one_line():
    model = _model("int4", positional="alibi")
    lines = []
    assert enable_fast_decode(model, warn=lines.append) is None
    assert len(lines) == 1 and "\n" not in lines[0] and "positional" in lines[0]
    assert not hasattr(model, "fast_decode")


def test_compile_unavailable_falls_back_with_one_line(monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("no C++ compiler found\nsecond line of detail")

    monkeypatch.setattr(fast_mod.torch, "compile", broken)
    assert compile_unavailable().startswith("RuntimeError: no C++ compiler found")
    model = _model("int4")
    lines = []
    dec = enable_fast_decode(model, compile=True, warn=lines.append)
    assert len(lines) == 1 and "\n" not in lines[0] and "torch.compile is unavailable" in lines[0]
    assert dec is not None and not dec.compiled  # the uncompiled fast step instead
    prompt = torch.randint(0, 320, (1, 4))
    ref = _steps(model, lambda ids, kv: model(ids, cache=kv, last_only=True)[:, -1], prompt, 3)
    assert _rel(_steps(model, dec, prompt, 3), ref) <= LOGIT_TOL


def test_cli_generate_compile_flag_falls_back_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fast_mod, "compile_unavailable", lambda: "RuntimeError: no compiler")
    tok = Tokenizer(models.WordLevel({"[UNK]": 0, **{f"w{i}": i + 1 for i in range(319)}},
                                     unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    save_model_dir(tmp_path / "m", _model(None), tok)
    kw = dict(max_new_tokens=5, temperature=0.0, stream=False, quant="int4", ignore_eos=True)
    want = cli_generate(str(tmp_path / "m"), "w1 w2 w3", **kw)
    got = cli_generate(str(tmp_path / "m"), "w1 w2 w3", compile=True, **kw)
    assert got == want
    err = capsys.readouterr().err
    assert err.count("torch.compile is unavailable") == 1 and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("mode", ["full", "layers"])
def test_compiled_step_matches_model(mode):
    """The slowest test here (~5-10 s each: inductor compiles the step once; the second cache
    size reuses it)."""
    if compile_unavailable() is not None:
        pytest.skip("torch.compile is unavailable here")
    model = _model("int4", seed=3, n_layer=2)
    dec = FastDecoder(model, compile=mode)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    for n_prompt in (5, 9):  # two cache sizes: one compilation (the length is dynamic)
        prompt = torch.randint(0, 320, (1, n_prompt))
        ref = _steps(model, lambda ids, kv: model(ids, cache=kv, last_only=True)[:, -1],
                     prompt, 4)
        got = _steps(model, dec, prompt, 4)
        assert _rel(got, ref) <= LOGIT_TOL
        assert torch.equal(got.argmax(-1), ref.argmax(-1))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs == 1  # no recompile


def test_bf16_kv_cache_takes_the_model_path_under_fast_decode():
    """A cache stored in another dtype than the model computes in (``--kv-cache bf16``) is not
    fed by the fast step (which writes and reads the buffers directly): the model's own path
    runs and gives exactly what it gives without fast decoding."""
    from lmforge.blocks.kv_cache import set_kv_cache_dtype

    model = _model("int4", seed=3)
    set_kv_cache_dtype(model, "bf16")
    prompt = torch.randint(0, 320, (1, 5))
    cfg = GenerationConfig(max_new_tokens=12, temperature=0, stop_at_eos=False)
    want = generate(model, prompt, cfg)
    dec = enable_fast_decode(model)
    kv = model.new_cache(1, max_len=8)
    assert kv.k[0].dtype == torch.bfloat16 and not dec.accepts(prompt[:, :1], kv)
    got = generate(model, prompt, cfg)
    disable_fast_decode(model)
    assert torch.equal(got, want)
