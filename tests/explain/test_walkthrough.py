"""lmforge.explain.walkthrough: every step equals the tensor the model's own forward pass
computed (captured here with independent hooks), softmax rows sum to 1, the logits equal
model(ids), for the toy model and for decoders/encoders of other layouts."""

from __future__ import annotations

import math

import pytest
import torch
from explain_helpers import tiny

from lmforge.explain.render import format_html, format_terminal
from lmforge.explain.tiny import tiny_model
from lmforge.explain.walkthrough import StepMismatch, walkthrough
from lmforge.models import ModelConfig, build_model


def _hooked(model, modules: dict):
    """{name: (input, output)} of each module during model(ids), batch dimension removed."""
    seen, handles = {}, []

    def hook(name):
        def keep(module, args, out):
            seen.setdefault(name, (args[0][0].clone(), out[0].clone()))
        return keep

    for name, m in modules.items():
        handles.append(m.register_forward_hook(hook(name)))
    return seen, handles


def test_tiny_steps_equal_the_models_own_tensors():
    model, tok = tiny_model("abca")
    bb = model.backbone
    block = bb.layers[0]
    mods = {"embed": bb.embed, "q": block.attn.q_proj, "k": block.attn.k_proj,
            "v": block.attn.v_proj, "o": block.attn.o_proj, "up": block.ff.up_proj,
            "down": block.ff.down_proj, "block": block, "norm1": block.norm1}
    seen, handles = _hooked(model, mods)
    ids = torch.tensor([[0, 1, 2, 0]])
    with torch.no_grad():
        logits = model(ids)[0]
    for h in handles:
        h.remove()
    walk = walkthrough(model, tok, "abca")
    steps = {s.name: s.tensor for s in walk.steps}
    expect = {"token embeddings": seen["embed"][1], "norm before attention": seen["norm1"][1],
              "Q = x W_q": seen["q"][1], "K = x W_k": seen["k"][1], "V = x W_v": seen["v"][1],
              "heads concatenated": seen["o"][0], "output projection": seen["o"][1],
              "first layer x W_1 + b_1": seen["up"][1], "activation": seen["down"][0],
              "block output": seen["block"][1], "logits": logits}
    for name, ref in expect.items():
        torch.testing.assert_close(steps[name], ref, rtol=0, atol=1e-6, msg=name)
    # the attention by hand: softmax(mask(Q K^T / sqrt(4)))
    q, k = seen["q"][1], seen["k"][1]
    scores = q @ k.T / 2.0
    assert torch.allclose(steps["scores QK^T / sqrt(d)"][0], scores, atol=1e-6)
    scores = scores.masked_fill(torch.ones(4, 4).triu(1).bool(), -math.inf)
    w = torch.softmax(scores, -1)
    torch.testing.assert_close(steps["softmax weights"][0], w)
    torch.testing.assert_close(steps["softmax weights"].sum(-1), torch.ones(1, 4))
    torch.testing.assert_close(steps["weights x V"][0], w @ seen["v"][1])
    probs = torch.softmax(logits[-1], -1)
    assert walk.top[0] == (tok.id_to_token(int(probs.argmax())), pytest.approx(float(probs.max())))
    assert len(walk.steps) == 25 and sum(s.checked is not None for s in walk.steps) == 19


@pytest.mark.parametrize("kind", ["decoder", "encoder", "seq2seq"])
def test_other_layouts_agree_with_their_forward(kind):
    model, tok = tiny(kind)
    for layer in (0, -1):
        walk = walkthrough(model, tok, "abc dd", layer=layer)
        checked = {s.name for s in walk.steps if s.checked}
        assert {"softmax weights", "heads concatenated", "output projection",
                "block output"} <= checked
        w = next(s.tensor for s in walk.steps if s.name == "softmax weights")
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:2]))
        if kind == "seq2seq":  # the encoder is walked; it has no token head
            assert not walk.top
            continue
        ids = torch.tensor([walk.ids])
        with torch.no_grad():
            ref = model(ids) if kind == "decoder" else model(ids).mlm_logits
        logits = next(s.tensor for s in walk.steps if s.name == "logits")
        torch.testing.assert_close(logits, ref[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("extra", [dict(positional="alibi", n_kv_head=1, attention_window=3),
                                   dict(prenorm=False, positional="learned", activation="gelu")])
def test_alibi_gqa_window_and_postnorm_decoders(extra):
    cfg = ModelConfig(vocab_size=10, context_length=16, d_model=8, n_layer=2, n_head=2,
                      init_std=0.3, **extra)
    torch.manual_seed(1)
    model = build_model(cfg).eval()
    _, tok = tiny_model("abcdefgh")
    walk = walkthrough(model, tok, "abcdefg", layer=1)
    steps = {s.name: s for s in walk.steps}
    assert steps["softmax weights"].checked and steps["logits"].checked
    if "attention_window" in extra:  # query 6 sees keys 4..6 only
        assert (steps["softmax weights"].tensor[:, 6, :4] == 0).all()


def test_a_step_that_disagrees_raises():
    model, tok = tiny_model("abca")
    calls = []

    def tamper(module, args, out):  # changes the model's own pass, not the recomputation
        calls.append(1)
        return out + 1.0 if len(calls) == 1 else out

    model.backbone.layers[0].attn.o_proj.register_forward_hook(tamper)
    with pytest.raises(StepMismatch, match="output projection"):
        walkthrough(model, tok, "abca")


def test_render_terminal_and_self_contained_html():
    model, tok = tiny_model("abca")
    walk = walkthrough(model, tok, "abca")
    text = format_terminal(walk)
    for step in walk.steps:
        assert step.name in text
    assert "row sums: 1.0000 1.0000 1.0000 1.0000" in text
    assert "19 of 25 steps checked" in text
    page = format_html(walk)
    assert page.startswith("<!DOCTYPE html>") and "http" not in page and "<script" not in page
    w = next(s.tensor for s in walk.steps if s.name == "softmax weights")
    for v in w[0, 3].tolist():  # every number of the page's attention row
        assert f"{v:.4f}" in page
