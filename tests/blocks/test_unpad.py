"""Padding removal: the backbone run on the packed real tokens gives the same outputs and the
same gradients as the padded computation, for encoders and decoders, fused and plain
projections (LoRA), every positional encoding."""

import pytest
import torch

from lmforge.blocks import MIN_PADDING, Unpadded
from lmforge.finetune import LoRAConfig, inject_lora
from lmforge.models import ModelConfig, Transformer


def padded_batch(lengths, T, vocab=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (len(lengths), T), generator=g)
    mask = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]  # (B, T)
    return ids.masked_fill(~mask, 0), mask


def test_pack_and_pad_round_trip():
    _, mask = padded_batch([5, 2, 7], 8)
    u = Unpadded.from_mask(mask)
    assert u.index.tolist() == [0, 1, 2, 3, 4, 8, 9, 16, 17, 18, 19, 20, 21, 22]
    x = torch.randn(3, 8, 4)
    packed = u.pack(x)  # (14, 4)
    assert torch.equal(packed, x[mask])
    back = u.pad(packed)
    assert torch.equal(back[mask], x[mask]) and not back[~mask].any()


def test_little_padding_is_not_packed():
    full = torch.ones(4, 32, dtype=torch.bool)
    assert Unpadded.from_mask(full) is None
    few = full.clone()
    few[0, -int(MIN_PADDING * 4 * 32) + 1:] = False  # just under the threshold
    assert Unpadded.from_mask(few) is None
    few[0, -int(MIN_PADDING * 4 * 32):] = False
    assert Unpadded.from_mask(few) is not None


def run_both(model: Transformer, ids, mask, **kw):
    """(outputs, grads) with and without padding removal; the loss reads real positions only."""
    results = []
    for unpad in (False, True):
        model.unpad = unpad
        model.zero_grad()
        out = model(ids, padding_mask=mask, **kw)  # (B, T, C)
        (out[mask] ** 2).sum().backward()
        results.append((out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                       if p.grad is not None}))
    model.unpad = True
    return results


CASES = {
    "bert": dict(arch="encoder", prenorm=False, embed_norm=True, type_vocab_size=2),
    "rope-gqa-decoder": dict(arch="decoder", positional="rope", n_kv_head=2, norm="rmsnorm",
                             activation="swiglu", bias=False),
    "alibi-encoder": dict(arch="encoder", positional="alibi"),
    "explicit-attention": dict(arch="encoder", attention="explicit"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_unpadded_equals_padded(case):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=40, d_model=32, n_layer=2, n_head=4, context_length=32,
                      **CASES[case])
    model = Transformer(cfg).train()  # dropout 0: training mode, deterministic
    ids, mask = padded_batch([30, 9, 17, 1, 24], 32)  # 60% padding; one row of 1 token
    (ref, ref_g), (got, got_g) = run_both(model, ids, mask)
    assert (got[mask] - ref[mask]).abs().max() < 1e-5
    assert not got[~mask].any()  # padding positions come back as zeros
    assert ref_g.keys() == got_g.keys()
    for n in ref_g:
        assert torch.allclose(got_g[n], ref_g[n], atol=1e-5, rtol=1e-4), n


def test_unpadded_with_lora_projections():
    """Adapters make the projections unfusable: the per-projection path packs too."""
    torch.manual_seed(0)
    cfg = ModelConfig(arch="encoder", vocab_size=40, d_model=32, n_layer=2, n_head=4,
                      context_length=32)
    model = Transformer(cfg)
    inject_lora(model, LoRAConfig(rank=4, alpha=8))  # q and v projections
    for n, p in model.named_parameters():
        if n.endswith("lora_B"):
            torch.nn.init.normal_(p, std=0.1)  # B = 0 at init would hide a wrong path
    ids, mask = padded_batch([30, 9, 17], 32)
    (ref, ref_g), (got, got_g) = run_both(model, ids, mask)
    assert (got[mask] - ref[mask]).abs().max() < 1e-5
    assert any("lora" in n for n in got_g)
    for n in ref_g:
        assert torch.allclose(got_g[n], ref_g[n], atol=1e-5, rtol=1e-4), n
