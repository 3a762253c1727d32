"""Transformer-XL: relative positions (the four terms written out), the segment memory against
one masked full-context run, no gradient into the memory, causality, the stream batcher,
perplexity and generation with the memory, and `lmforge train/eval/generate` end to end."""

import json
import math

import numpy as np
import pytest
import torch

from lmforge.blocks.attention import MultiHeadAttention
from lmforge.blocks.positions import sinusoidal_table
from lmforge.blocks.relative import RelativeContext
from lmforge.cli.main import main
from lmforge.data.streams import stream_batch, stream_segments
from lmforge.errors import ConfigError
from lmforge.evaluation.perplexity import perplexity
from lmforge.inference.generate import GenerationConfig, generate
from lmforge.models.causal_lm import CausalLM
from lmforge.models.config import ModelConfig
from lmforge.tasks.lm import SegmentObjective

SEG = 8


def xl_model(memory_length=5, n_layer=2, seed=0, dtype=torch.float64, **kw):
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=37, d_model=32, n_head=4, n_layer=n_layer, context_length=SEG,
                      positional="relative", memory_length=memory_length, **kw)
    model = CausalLM(cfg).to(dtype).eval()
    with torch.no_grad():  # u, v start at zero: make them matter
        model.backbone.rel_u.normal_(0, 0.5)
        model.backbone.rel_v.normal_(0, 0.5)
    return model


def xl_mask(n: int, seg: int, memory: int) -> torch.Tensor:
    """Query i of segment s (starting at S) sees keys S - memory <= j <= i.  (n, n)"""
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    start = (i // seg) * seg
    return (j <= i) & (j >= start - memory)


def reference_logits(model, ids: torch.Tensor, memory: int) -> torch.Tensor:
    """One run over the whole sequence with relative positions and the XL visibility mask:
    what the segment recurrence must reproduce.  ids (B, N) -> (B, N, V)"""
    bb = model.backbone
    N = ids.shape[1]
    x = bb._embed(ids, torch.arange(N), None)
    mask = xl_mask(N, SEG, memory)[None, None]  # (1, 1, N, N)
    rel = bb._relative(N)
    for i, layer in enumerate(bb.layers):
        x = layer(x, mask=mask, is_causal=True, relative=rel, layer=i, positions=torch.arange(N))
    return model.lm_head(bb.norm(x))


def segment_logits(model, ids: torch.Tensor, memory_length=None) -> torch.Tensor:
    mem = model.new_memory(memory_length)
    return torch.cat([model(ids[:, s:s + SEG], memory=mem) for s in range(0, ids.shape[1], SEG)], 1)


def test_relative_attention_is_the_four_terms_written_out():
    torch.manual_seed(1)
    C, H, D, T, M = 16, 2, 8, 5, 3
    attn = MultiHeadAttention(C, H, relative=True, backend="explicit").double()
    u, v = torch.randn(H, D, dtype=torch.float64), torch.randn(H, D, dtype=torch.float64)
    table = sinusoidal_table(M + T, C).double()
    x, mem = torch.randn(1, T, C, dtype=torch.float64), torch.randn(1, M, C, dtype=torch.float64)
    got = attn(x, memory=mem, is_causal=True, relative=RelativeContext(table, u, v))
    src = torch.cat([mem, x], 1)[0]  # (M+T, C)
    q = attn.q_proj(x[0]).view(T, H, D)
    k = attn.k_proj(src).view(M + T, H, D)
    val = attn.v_proj(src).view(M + T, H, D)
    r = attn.r_proj(table).view(M + T, H, D)  # W_r R_d for distance d
    out = torch.zeros(T, H, D, dtype=torch.float64)
    for h in range(H):
        for i in range(T):
            qi = M + i  # the query's position among the keys
            s = torch.full((M + T,), -math.inf, dtype=torch.float64)
            for j in range(qi + 1):
                a, c = q[i, h] @ k[j, h], u[h] @ k[j, h]
                b, d = q[i, h] @ r[qi - j, h], v[h] @ r[qi - j, h]
                s[j] = (a + b + c + d) / math.sqrt(D)
            out[i, h] = torch.softmax(s, 0) @ val[:, h]
    want = attn.o_proj(out.reshape(T, H * D))
    torch.testing.assert_close(got[0], want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("memory_length", [5, 8, 13])
def test_memory_equals_one_masked_full_context_run(memory_length):
    model = xl_model(memory_length)
    ids = torch.randint(0, 37, (2, 3 * SEG))
    with torch.no_grad():
        got = segment_logits(model, ids)
        want = reference_logits(model, ids, memory_length)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    # the memory matters: without it segment 2 differs
    with torch.no_grad():
        alone = model(ids[:, SEG:2 * SEG])
    assert (alone - got[:, SEG:2 * SEG]).abs().max() > 1e-3


def test_segment_two_equals_full_run_with_all_backends():
    for backend in ("fused", "explicit", "auto"):
        model = xl_model(SEG, attention=backend)
        ids = torch.randint(0, 37, (1, 2 * SEG))
        with torch.no_grad():
            mem = model.new_memory()
            model(ids[:, :SEG], memory=mem)
            seg2 = model(ids[:, SEG:], memory=mem)
            full = model(ids)  # memory = segment: the plain causal run over both
        torch.testing.assert_close(seg2, full[:, SEG:], rtol=1e-9, atol=1e-9)


def test_memory_gets_no_gradient():
    first = torch.randint(0, 16, (2, SEG))  # tokens only segment 1 uses
    second = torch.randint(20, 37, (2, SEG))
    grads = []
    for grad_in_first in (True, False):
        model = xl_model(6, tie_embeddings=False).train()
        mem = model.new_memory()
        with torch.set_grad_enabled(grad_in_first):
            model(first, memory=mem).sum()
        assert all(not t.requires_grad for t in mem.mem + mem.pending if t is not None)
        model(second, memory=mem).pow(2).mean().backward()
        emb = model.backbone.embed.weight.grad
        assert emb[:16].abs().max() == 0 and emb[20:].abs().max() > 0  # nothing reaches segment 1
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):  # segment 1's graph contributes nothing
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-15)


def test_no_leak_of_the_future():
    model = xl_model(5)
    ids = torch.randint(0, 37, (1, 2 * SEG))
    changed = ids.clone()
    changed[0, SEG + 4:] = (changed[0, SEG + 4:] + 1) % 37
    with torch.no_grad():
        a, b = segment_logits(model, ids), segment_logits(model, changed)
    torch.testing.assert_close(a[:, :SEG + 4], b[:, :SEG + 4], rtol=0, atol=0)
    assert (a[:, SEG + 4:] - b[:, SEG + 4:]).abs().max() > 1e-6


def test_relative_kv_cache_decoding_equals_full_forward():
    model = xl_model(0)  # relative positions, no memory: ordinary KV-cache decoding
    ids = torch.randint(0, 37, (2, SEG))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache(2)
        steps = [model(ids[:, :3], cache=cache)] + [model(ids[:, t:t + 1], cache=cache)
                                                    for t in range(3, SEG)]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-9, atol=1e-9)


def test_generation_keeps_the_memory():
    model = xl_model(5)
    prompt = torch.randint(0, 37, (2, 11))
    got = generate(model, prompt, GenerationConfig(max_new_tokens=14, temperature=0))
    seq = prompt
    with torch.no_grad():
        for _ in range(14):  # greedy, each step scored by the masked full run
            nxt = reference_logits(model, seq, 5)[:, -1].argmax(-1)
            seq = torch.cat([seq, nxt[:, None]], 1)
    assert torch.equal(got, seq[:, 11:])


def test_perplexity_reads_segments_with_the_memory():
    model = xl_model(5)
    ids = torch.randint(0, 37, (1, 3 * SEG + 4))
    res = perplexity(model, ids[0].tolist(), n_chars=28, n_bytes=28)
    with torch.no_grad():
        logits = reference_logits(model, ids[:, :-1], 5)[0]
    nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum")
    assert res.n_tokens == ids.shape[1] - 1 and res.stride == SEG
    assert res.loss == pytest.approx(float(nll) / (ids.shape[1] - 1), rel=1e-6)  # fp32 logits


def test_stream_batches_continue_row_by_row():
    tokens = np.arange(1000, dtype=np.uint16)
    B, T = 3, 10  # world 2 -> 6 streams of 166 tokens, 16 segments each
    batches = [stream_batch(tokens, B, T, i, rank=1, world=2) for i in range(17)]
    for t in range(15):
        x0, y0, _ = batches[t]
        x1, _, _ = batches[t + 1]
        assert torch.equal(x1[:, 0], y0[:, -1]) and torch.equal(x1[:, 1:], (x1[:, :1] + torch.arange(1, T)))
    x, y, first = batches[0]
    assert bool(first) and torch.equal(x[:, 0], torch.tensor([3, 4, 5]) * 166)
    assert torch.equal(y, x + 1)
    assert bool(batches[16][2]) and torch.equal(batches[16][0], x)  # streams start again
    assert not bool(batches[5][2])
    assert len(list(stream_segments(tokens, 4, T, max_batches=3))) == 3


def test_segment_objective_carries_the_memory():
    model = xl_model(6).train()
    ids = torch.randint(0, 37, (2, 3 * SEG + 1))
    objective = SegmentObjective()
    losses = [objective(model, (ids[:, s:s + SEG], ids[:, s + 1:s + SEG + 1], torch.tensor(s == 0)))
              for s in range(0, 3 * SEG, SEG)]
    with torch.no_grad():
        logits = reference_logits(model, ids[:, :-1], 6)
    for k, loss in enumerate(losses):
        want = torch.nn.functional.cross_entropy(logits[:, k * SEG:(k + 1) * SEG].flatten(0, 1),
                                                 ids[:, k * SEG + 1:(k + 1) * SEG + 1].flatten())
        assert float(loss.detach()) == pytest.approx(float(want), rel=1e-6)  # the loss is fp32
    objective(model, (ids[:, :SEG], ids[:, 1:SEG + 1], torch.tensor(True)))
    assert objective.memory.held == 6  # a new stream: only the first segment's last 6


@pytest.mark.parametrize("kw, field", [
    (dict(arch="encoder", positional="relative"), "model.positional"),
    (dict(memory_length=4), "model.memory_length"),
    (dict(positional="relative", attention="nonexistent"), "model.attention"),
])
def test_refused_configs(kw, field):
    with pytest.raises(ConfigError, match=field):
        ModelConfig(vocab_size=10, d_model=16, n_head=2, **kw)


def test_cli_train_eval_generate(tmp_path, capsys):
    text = tmp_path / "corpus.txt"
    text.write_text("".join(f"the {a} sat on the {b} mat.\n" for a in ("cat", "dog", "bird")
                            for b in ("blue", "red", "old")) * 12, encoding="utf-8")
    cfg = tmp_path / "xl.toml"
    cfg.write_text(
        f'out_dir = "{tmp_path / "model"}"\nseed = 3\n[data]\npath = "{text}"\n'
        '[tokenizer]\nkind = "char"\n'
        '[model]\nd_model = 32\nn_layer = 2\nn_head = 2\ncontext_length = 16\n'
        'positional = "relative"\nmemory_length = 16\n'
        "[train]\nmax_steps = 30\nbatch_size = 4\nlr = 5e-3\neval_every = 30\n"
        "checkpoint_every = 30\neval_batches = 2\nprogress = false\nwarmup_steps = 3\n",
        encoding="utf-8")
    assert main(["train", str(cfg)]) == 0
    model_dir = tmp_path / "model"
    meta = json.loads((model_dir / "meta.json").read_text())
    assert meta["training"]["val_loss"] < math.log(20) - 0.5  # learned something (20 chars)
    assert json.loads((model_dir / "config.json").read_text())["memory_length"] == 16
    out = tmp_path / "eval.json"
    assert main(["eval", str(model_dir), "--data", str(text), "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    n = len(text.read_text())
    assert res["stride"] == 16 and res["n_tokens"] in (n - 1, n)  # n: predicted from a BOS
    capsys.readouterr()
    assert main(["generate", str(model_dir), "--prompt", "the cat sat on", "--greedy",
                 "--max-new-tokens", "40"]) == 0  # longer than the context: memory carries
    assert capsys.readouterr().out.startswith("the cat sat on")
