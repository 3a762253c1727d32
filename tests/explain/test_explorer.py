"""lmforge.explain.explorer: rollout and logit lens against hand-computed cases (a 2-layer toy
with known weights), head ablation against zeroing the head's slice by hand, and explore()
against the model's own attention weights for decoders, encoders and encoder–decoders."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from explain_helpers import tiny

from lmforge.explain.anatomy import head_switched_off
from lmforge.explain.explorer import ablate_head, explore, load_for_explore, rollout
from lmforge.explain.tiny import char_tokenizer
from lmforge.inference.translate import Translator
from lmforge.models import CausalLM, ModelConfig


def test_rollout_by_hand():
    w1 = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    w2 = torch.tensor([[1.0, 0.0], [0.2, 0.8]])
    # 0.5 W + 0.5 I: A1 = [[1, 0], [.25, .75]], A2 = [[1, 0], [.1, .9]]; A2 @ A1
    expect = torch.tensor([[1.0, 0.0], [0.1 + 0.9 * 0.25, 0.9 * 0.75]])
    torch.testing.assert_close(rollout(torch.stack([w1, w2])[:, None]), expect)
    # heads are averaged first: two heads (W, I) of one layer = one head 0.5 W + 0.5 I
    two = torch.stack([w1, torch.eye(2)])[None]  # (1, 2, T, T)
    a = 0.5 * (0.5 * w1 + 0.5 * torch.eye(2)) + 0.5 * torch.eye(2)
    torch.testing.assert_close(rollout(two), a)


EMBED = torch.tensor([[1.0, 0.2, 0, 0], [0, 1.0, 0.4, 0], [0.1, 0, 1.0, 0.7], [0.5, 0, 0, 1.0]])


def _known_toy():
    """2 layers, d_model 4, 1 head; queries and keys zero (every causal row uniform); layer 0
    adds nothing to the residual stream, layer 1 adds the bias ``b`` (feed-forward output)."""
    tok = char_tokenizer("abc")  # a b c ? -> 0 1 2 3
    cfg = ModelConfig(vocab_size=4, context_length=8, d_model=4, n_layer=2, n_head=1, d_ff=4,
                      positional="none", attention="explicit", activation="relu")
    model = CausalLM(cfg).eval()
    b = torch.tensor([2.0, -1.0, 0.5, 0.0])
    with torch.no_grad():
        model.backbone.embed.weight.copy_(EMBED)  # tied: also the head
        for i, block in enumerate(model.backbone.layers):
            for p in list(block.attn.parameters()) + list(block.ff.parameters()):
                p.zero_()
            if i == 1:
                block.ff.down_proj.bias.copy_(b)
    return model, tok, b


def _layernorm(x):  # the final norm (weight 1, bias 0, eps 1e-5), by hand
    mu = x.mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(((x - mu) ** 2).mean(-1, keepdim=True) + 1e-5)


def test_logit_lens_attention_and_rollout_of_a_known_toy():
    model, tok, b = _known_toy()
    out = explore(model, tok, "abc", top_k=4)
    json.dumps(out)
    assert out["kind"] == "decoder" and out["tokens"] == ["a", "b", "c"]
    uniform = [[1, 0, 0], [0.5, 0.5, 0], [1 / 3, 1 / 3, 1 / 3]]
    for layer in out["attention"]:
        torch.testing.assert_close(torch.tensor(layer[0]), torch.tensor(uniform), atol=1e-4, rtol=0)
    a = 0.5 * torch.tensor(uniform) + 0.5 * torch.eye(3)
    torch.testing.assert_close(torch.tensor(out["rollout"]), a @ a, atol=1e-4, rtol=0)
    assert model.lm_head.weight is model.backbone.embed.weight
    emb = EMBED[:3]  # the residual stream after layer 0 is the embedding
    for layer, residual in enumerate((emb, emb + b)):
        probs = torch.softmax(_layernorm(residual) @ EMBED.T, -1)  # tied head
        for pos in range(3):
            got = out["logit_lens"][layer][pos]
            order = probs[pos].argsort(descending=True).tolist()
            assert [g["token"] for g in got] == [tok.id_to_token(i) for i in order]
            assert [g["prob"] for g in got] == pytest.approx(probs[pos][order].tolist(), abs=1e-4)
    with torch.no_grad():  # the last layer's lens is the model's prediction
        last = torch.softmax(model(torch.tensor([[0, 1, 2]]))[0], -1)
    assert out["logit_lens"][1][2][0]["prob"] == pytest.approx(float(last[2].max()), abs=1e-4)


def test_switching_a_head_off_zeroes_exactly_its_slice():
    model, _ = tiny("decoder")
    attn = model.backbone.layers[1].attn
    d = attn.head_dim
    seen = []
    attn.o_proj.register_forward_hook(lambda m, a, o: seen.append((a[0].clone(), o.clone())))
    ids = torch.tensor([[0, 1, 2, 3, 4]])
    with torch.no_grad():
        model(ids)
        with head_switched_off(attn, 1):
            model(ids)
    (x, y), (x_off, y_off) = seen
    assert (x_off[..., d:2 * d] == 0).all()  # head 1's slice is zero
    torch.testing.assert_close(x_off[..., :d], x[..., :d])  # head 0 unchanged
    cut = x.clone()
    cut[..., d:2 * d] = 0
    torch.testing.assert_close(y_off, cut @ attn.o_proj.weight.T)  # o_proj(x with slice zeroed)
    torch.testing.assert_close(y - y_off, x[..., d:] @ attn.o_proj.weight[:, d:].T)
    assert not attn.o_proj._forward_pre_hooks  # the hook is gone afterwards


def test_ablate_head_against_a_model_with_that_head_cut_out():
    model, tok = tiny("decoder")
    res = ablate_head(model, tok, "abcabc", 0, 1)
    ref = copy.deepcopy(model)
    d = ref.cfg.dim_head
    with torch.no_grad():
        ref.backbone.layers[0].attn.o_proj.weight[:, d:2 * d] = 0
        ids = torch.tensor([tok.encode("abcabc").ids])
        full, cut = model(ids)[0], ref(ids)[0]
    gold = ids[0, 1:]
    assert res["loss"] == pytest.approx(float(F.cross_entropy(full[:-1], gold)), abs=1e-5)
    assert res["loss_ablated"] == pytest.approx(float(F.cross_entropy(cut[:-1], gold)), abs=1e-5)
    best = int(full[-1].argmax())
    assert res["token"] == tok.id_to_token(best)
    assert res["prob_ablated"] == pytest.approx(float(cut[-1].softmax(-1)[best]), abs=1e-5)
    assert res["loss_ablated"] != res["loss"]


@pytest.mark.parametrize("kind", ["decoder", "encoder", "seq2seq"])
def test_explore_matches_the_models_attention(kind, model_dirs):
    model, tok = load_for_explore(model_dirs[kind])
    out = explore(model, tok, "bad cab", top_k=3)
    json.dumps(out)
    ids = torch.tensor([tok.encode("bad cab").ids])
    attn = []
    with torch.no_grad():
        if kind == "decoder" or kind == "encoder":
            model(ids, attn_out=attn)
        else:
            tr = Translator(model, tok)
            src = tr.encode_sources(["bad cab"])[0]
            model.encode(torch.tensor([src]), attn_out=attn)
            w, _, tgt_names = tr.cross_attention("bad cab")
            assert out["target_tokens"] == tgt_names
            torch.testing.assert_close(torch.tensor(out["cross_attention"]).float(), w,
                                       atol=1e-4, rtol=0)
    ref = torch.stack([a[0] for a in attn])
    got = torch.tensor(out["attention"]).float()
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.tensor(out["rollout"]).float(), rollout(ref), atol=2e-4,
                               rtol=0)
    assert out["kind"] == kind and len(out["logit_lens"]) == 2
    assert all(len(pos) == 3 for layer in out["logit_lens"] for pos in layer)
