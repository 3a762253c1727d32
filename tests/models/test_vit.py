"""The Vision Transformer: patch embedding against an explicit loop over patches, the 2-D
sine/cosine table against its formula, attention rollout against a naive product, and a tiny
ViT learning scikit-learn's digits well above chance."""

import math

import numpy as np
import torch
import torch.nn.functional as F

from lmforge.models import ModelConfig, VisionTransformer, build_model
from lmforge.models.vit import PatchEmbedding, sincos_2d
from lmforge.tasks.image_predict import attention_rollout


def vit_config(**kw) -> ModelConfig:
    base = dict(arch="vit", heads="classifier", n_classes=10, image_size=8, image_channels=1,
                patch_size=2, d_model=32, n_layer=1, n_head=2, context_length=17)
    return ModelConfig(**{**base, **kw})


def test_patch_embedding_is_a_linear_map_of_each_flattened_patch():
    torch.manual_seed(0)
    pe = PatchEmbedding(3, 4, 16)
    x = torch.randn(2, 3, 12, 8)
    out = pe(x)  # (B, N, D)
    W = pe.proj.weight.reshape(16, -1)  # (D, C*P*P)
    rows = []
    for i in range(0, 12, 4):          # row-major over the patch grid
        for j in range(0, 8, 4):
            patch = x[:, :, i:i + 4, j:j + 4].reshape(2, -1)  # (B, C*P*P)
            rows.append(patch @ W.T + pe.proj.bias)
    ref = torch.stack(rows, 1)  # (B, N, D)
    assert out.shape == (2, 6, 16)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_sincos_2d_matches_the_formula():
    g, d = 3, 8
    t = sincos_2d(g, d)
    def sincos(pos, dim):
        v = torch.zeros(dim)
        for k in range(0, dim, 2):
            v[k] = math.sin(pos / 10000 ** (k / dim))
            v[k + 1] = math.cos(pos / 10000 ** (k / dim))
        return v
    for r in range(g):
        for c in range(g):
            ref = torch.cat([sincos(r, d // 2), sincos(c, d // 2)])
            torch.testing.assert_close(t[r * g + c], ref, atol=1e-5, rtol=1e-5)


def test_attention_weights_and_rollout():
    torch.manual_seed(0)
    m = build_model(vit_config(n_layer=2, positional="sinusoidal")).eval()
    assert isinstance(m, VisionTransformer)
    weights = []
    logits = m(torch.rand(1, 1, 8, 8), attn_out=weights)
    assert logits.shape == (1, 10) and len(weights) == 2 and weights[0].shape == (1, 2, 17, 17)
    torch.testing.assert_close(weights[0].sum(-1), torch.ones(1, 2, 17))
    naive = torch.eye(17)
    for w in weights:  # A_l = 0.5 * (mean_h + I), rows renormalised; rollout = A_L ... A_1
        a = 0.5 * (w[0].mean(0) + torch.eye(17))
        naive = (a / a.sum(-1, keepdim=True)) @ naive
    torch.testing.assert_close(attention_rollout(weights)[0], naive)


def test_mean_pooling_has_no_cls_token():
    torch.manual_seed(0)
    m = build_model(vit_config(classifier_pooling="mean")).eval()
    assert m.cls is None and m.pos_learned.shape == (1, 16, 32)
    x = torch.rand(2, 1, 8, 8)
    h = m.norm(m.layers[0](m.tokens(x), positions=torch.arange(16)))
    torch.testing.assert_close(m(x), m.head(h.mean(1)))


def test_vit_learns_digits_well_above_chance():
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    d = load_digits()
    x = torch.tensor(d.images[:, None] / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y), generator=g)
    tr, va = perm[:1400], perm[1400:]
    m = build_model(vit_config(patch_size=4, context_length=5, d_model=48, n_head=4))
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    for step in range(120):
        idx = tr[torch.randint(0, len(tr), (64,), generator=g)]
        loss = F.cross_entropy(m(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        acc = (m(x[va]).argmax(-1) == y[va]).float().mean().item()
    assert acc > 0.6, acc  # chance is 0.1
