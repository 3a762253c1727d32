"""QLoRA: LoRA adapters on a base model whose block projections are NF4."""

import copy

import torch
import torch.nn.functional as F
from ft_helpers import tiny_model
from torch import nn

from lmforge.finetune import (ALL_LINEAR, LoRAConfig, NF4Linear, base_fingerprint, inject_lora,
                              load_adapter, lora_layers, merge_lora, quantize_nf4, save_adapter)

X = torch.randint(0, 97, (4, 32), generator=torch.Generator().manual_seed(0))


def lm_loss(model, x=X):
    logits = model(x)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), x[:, 1:].flatten())


def qlora(model, rank=4):
    quantize_nf4(model)
    inject_lora(model, LoRAConfig(rank=rank, alpha=2 * rank, targets=ALL_LINEAR))
    return model


def test_nf4_model_close_to_fp32():
    fp = tiny_model()
    q = copy.deepcopy(fp)
    quantize_nf4(q)
    ref, out = fp(X), q(X)
    # measured over 5 seeds: relative L2 of the logits 0.036-0.040, |loss change| < 0.002,
    # largest total-variation distance between next-token distributions < 0.008
    assert (out - ref).norm() / ref.norm() < 0.06
    assert abs(lm_loss(fp).item() - lm_loss(q).item()) < 0.01
    tv = (ref.softmax(-1) - out.softmax(-1)).abs().sum(-1).max() / 2
    assert tv < 0.02


def test_qlora_starts_at_the_quantised_model_and_trains_adapters_only():
    model = tiny_model()
    quantize_nf4(model)
    ref = model(X)
    report = inject_lora(model, LoRAConfig(rank=4, alpha=8, targets=ALL_LINEAR))
    assert all(isinstance(m.base, NF4Linear) for m in lora_layers(model).values())
    assert report.trainable_share < 0.1
    assert torch.equal(model(X), ref)  # B = 0

    frozen = {k: v.clone() for k, v in model.state_dict().items() if ".lora_" not in k}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    first = lm_loss(model).item()
    for step in range(25):
        opt.zero_grad()
        loss = lm_loss(model)
        loss.backward()
        if step == 0:
            for name, p in model.named_parameters():
                assert (p.grad is not None) == (".lora_" in name), name
            assert all(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)
        opt.step()
    assert loss.item() < first - 0.5
    for k, v in model.state_dict().items():
        if k in frozen:
            assert torch.equal(v, frozen[k]), k  # 4-bit weights, norms, embeddings untouched


def test_merge_qlora_into_plain_linears():
    model = qlora(tiny_model())
    with torch.no_grad():
        for m in lora_layers(model).values():
            m.lora_B.normal_(0, 0.05)
    out = model(X)
    merge_lora(model)
    assert not any(isinstance(m, (NF4Linear,)) for m in model.modules())
    assert type(model.backbone.layers[0].ff.down_proj) is nn.Linear
    torch.testing.assert_close(model(X), out, rtol=0, atol=1e-5)


def test_qlora_adapter_loads_onto_the_full_precision_base(tmp_path):
    fp = tiny_model()
    model = qlora(copy.deepcopy(fp))
    assert base_fingerprint(model) == base_fingerprint(fp)
    with torch.no_grad():
        for m in lora_layers(model).values():
            m.lora_B.normal_(0, 0.05)
    save_adapter(model, tmp_path)
    load_adapter(fp, tmp_path)  # fp32 base + adapter: differs from QLoRA by the NF4 error only
    a, b = fp(X), model(X)
    assert (a - b).norm() / a.norm() < 0.06


def test_loading_a_model_directory_straight_into_nf4(tmp_path):
    import pytest

    from lmforge.errors import CheckpointError
    from lmforge.finetune import load_model_dir_nf4
    from lmforge.modeldir import save_model_dir
    from lmforge.tokenizers import train_tokenizer

    (tmp_path / "t.txt").write_text("abcdefghij klmnop " * 20, encoding="utf-8")
    tok = train_tokenizer([tmp_path / "t.txt"], kind="char")
    fp = tiny_model(vocab_size=97)
    save_model_dir(tmp_path / "m", fp, tok)
    lm, report = load_model_dir_nf4(tmp_path / "m")
    assert len(report.layers) == 14 and report.bytes_per_param < 0.52
    want = copy.deepcopy(fp)
    quantize_nf4(want)  # the same codes as quantising the loaded fp32 model
    a, b = lm.model.state_dict(), want.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert lm.model.lm_head.weight is lm.model.backbone.embed.weight  # still tied
    assert base_fingerprint(lm.model) == base_fingerprint(fp)
    with torch.no_grad():
        torch.testing.assert_close(lm.model(X), want(X))
    with pytest.raises(Exception, match="match no linear layer"):
        load_model_dir_nf4(tmp_path / "m", patterns=("*.nope",))
    (tmp_path / "m" / "model.safetensors").write_bytes(b"\x10\x00")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model_dir_nf4(tmp_path / "m")
