import copy

import pytest
import torch
import torch.nn.functional as F
from ft_helpers import tiny_model
from torch import nn

from lmforge.errors import ConfigError
from lmforge.finetune import (NF4_LEVELS, NF4Linear, inject_lora, nf4_levels, nf4_memory,
                              quantize_nf4, quantize_nf4_weight)
from lmforge.finetune.nf4 import (blockwise_absmax, dequantize_scales, encode_nf4, pack_4bit,
                                  quantize_scales, unpack_4bit)

LEVELS = torch.tensor(NF4_LEVELS)


def gaussian(shape=(512, 512), std=0.02, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * std


def brute_force(w: torch.Tensor, scales: torch.Tensor, block: int = 64) -> torch.Tensor:
    """Reference quantiser: for every value try all 16 levels times its block's scale and keep
    the closest reconstruction. Returns the reconstruction."""
    blocks = w.reshape(-1, block, 1)  # (n_blocks, block, 1)
    cand = LEVELS.view(1, 1, 16) * scales.view(-1, 1, 1)  # (n_blocks, 1, 16)
    idx = (blocks - cand).abs().argmin(-1, keepdim=True)  # (n_blocks, block, 1)
    return cand.expand(-1, block, -1).gather(-1, idx).reshape(w.shape)


def test_levels_are_the_normal_quantiles():
    assert len(NF4_LEVELS) == 16 and NF4_LEVELS[0] == -1.0 and NF4_LEVELS[7] == 0.0
    torch.testing.assert_close(nf4_levels().float(), LEVELS, rtol=0, atol=2e-7)


def test_encode_matches_brute_force_argmin():
    x = torch.rand(200_000, generator=torch.Generator().manual_seed(0)) * 2.2 - 1.1
    ref = (x[:, None] - LEVELS[None]).abs().argmin(-1)
    assert torch.equal(encode_nf4(x).long(), ref)


def test_pack_unpack_round_trip():
    codes = torch.randint(0, 16, (1000,), dtype=torch.uint8)
    packed = pack_4bit(codes)
    assert packed.dtype == torch.uint8 and packed.numel() == 500
    assert torch.equal(unpack_4bit(packed), codes)
    assert packed[0] == codes[0] * 16 + codes[1]  # first value in the high nibble


def test_gaussian_error_within_expected_bound():
    w = gaussian()
    q = quantize_nf4_weight(w)
    d = q.dequantize()
    err = d - w
    mean_abs = err.abs().mean() / w.std()
    rel_l2 = err.norm() / w.norm()
    # measured on 512x512 N(0, 0.02^2): mean |err| = 0.073 sigma, relative L2 = 0.092
    assert mean_abs < 0.08 and rel_l2 < 0.10
    # the codes are the best ones for the (double-quantised) scales the weight is stored with
    torch.testing.assert_close(d, brute_force(w, q.scales()), rtol=0, atol=1e-9)
    # and double quantisation costs almost nothing against fp32 scales
    ref = brute_force(w, blockwise_absmax(w.reshape(-1), 64))
    assert err.abs().mean() <= 1.01 * (ref - w).abs().mean()
    # worst case: half the widest gap between levels (-1 .. -0.696) times the scale, plus
    # what the 8-bit scale lost
    absmax = blockwise_absmax(w.reshape(-1), 64)
    s = q.scales()
    half_gap = float(LEVELS.diff().max()) / 2  # 0.152
    bound = half_gap * s + (absmax - s).clamp(min=0)  # (n_blocks,)
    assert (err.reshape(-1, 64).abs() <= bound[:, None] + 1e-7).all()


def test_double_quantised_scales_error_small():
    scales = blockwise_absmax(gaussian((1024, 1024)).reshape(-1), 64)  # 16384 scales
    codes, step, offset = quantize_scales(scales, 256)
    assert codes.dtype == torch.int8 and step.numel() == 64
    back = dequantize_scales(codes, step, offset, 256)
    rel = (back - scales).abs() / scales
    # measured: max 0.46%, mean 0.12%; the step is (max |scale - mean|) / 127 per 256 scales
    assert rel.max() < 0.006 and rel.mean() < 0.002
    assert ((back - scales).abs() <= step.repeat_interleave(256) / 2 + 1e-9).all()


def test_bytes_per_param():
    q = quantize_nf4_weight(gaussian((256, 256)))
    # 0.5 (codes) + 1/64 (8-bit scales) + 4 * 4/65536 (fp32 steps) + 4/65536 (offset)
    assert q.nbytes / 65536 == pytest.approx(0.5 + 1 / 64 + 20 / 65536)
    model = tiny_model()
    report = quantize_nf4(model)
    assert 0.5 < report.bytes_per_param < 0.6
    assert report.bytes_before == 4 * report.params
    assert nf4_memory(model).bytes_after == report.bytes_after
    assert "bytes/weight" in str(report)


def test_odd_shapes_and_zero_blocks():
    w = gaussian((10, 7))  # 70 values: the last block is padded
    w[0] = 0
    d = quantize_nf4_weight(w).dequantize()
    assert d.shape == (10, 7) and torch.isfinite(d).all()
    assert (d - w).abs().max() < 0.2 * w.abs().max()
    z = quantize_nf4_weight(torch.zeros(4, 64)).dequantize()
    assert torch.equal(z, torch.zeros(4, 64))


def test_nf4_linear_forward_and_input_gradient():
    lin = nn.Linear(64, 48)
    q = NF4Linear.from_linear(lin)
    assert not list(p for p in q.parameters() if p.requires_grad)
    w = q.dequantize()
    x = torch.randn(3, 5, 64, requires_grad=True)
    y = q(x)
    torch.testing.assert_close(y, F.linear(x, w, lin.bias))
    y.square().sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    F.linear(x2, w, lin.bias).square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    assert q.bias.grad is None


def test_nf4_state_survives_dtype_change_and_state_dict():
    model = tiny_model()
    quantize_nf4(model)
    x = torch.randint(0, 97, (2, 12))
    before = model.backbone.layers[0].attn.q_proj.dequantize()
    bf16 = copy.deepcopy(model).to(torch.bfloat16)  # the scales are int32 bit patterns: untouched
    assert torch.equal(bf16.backbone.layers[0].attn.q_proj.dequantize(), before)
    assert bf16(x).dtype == torch.bfloat16
    other = tiny_model(seed=5)
    quantize_nf4(other)
    other.load_state_dict(model.state_dict())
    assert torch.equal(other(x), model(x))


def test_quantize_patterns_and_errors():
    model = tiny_model()
    with pytest.raises(ConfigError, match="backbone.layers.*.attn.q_proj"):
        quantize_nf4(model, ["*.mlp.*"])
    with pytest.raises(ConfigError, match="tied"):
        quantize_nf4(model, ["lm_head"])
    report = quantize_nf4(copy.deepcopy(model), ["*.ff.*"])
    assert len(report.layers) == 6
    inject_lora(model)
    with pytest.raises(ConfigError, match="quantise the base model first"):
        quantize_nf4(model)
