"""`task = "sft"`: instruction tuning of a (tiny) pretrained causal LM, LoRA / QLoRA / full."""

import json

import pytest
import torch

from lmforge.finetune import builtin_instructions_path, load_adapter
from lmforge.io import load_model_dir, save_model_dir
from lmforge.models import ModelConfig, build_model
from lmforge.tasks import train_task
from lmforge.tokenizers import train_tokenizer
from lmforge.training import RunConfig
from lmforge.training.checkpoint import list_checkpoints, load_checkpoint


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("base")
    text = d / "corpus.txt"  # the instruction texts as plain text, to train a tokenizer on
    text.write_text(builtin_instructions_path().read_text(encoding="utf-8"), encoding="utf-8")
    tok = train_tokenizer([text], kind="bpe", vocab_size=400)
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=tok.get_vocab_size(), d_model=48, n_layer=2,
                                    n_head=4, n_kv_head=2, context_length=256, norm="rmsnorm",
                                    activation="swiglu", positional="rope", bias=False))
    save_model_dir(d, model, tok, {"note": "tiny random base"})
    return d


def run(base_dir, out, method, steps=40, extra=(), **kw):
    cfg = RunConfig.load(None, [*extra, 
        'task="sft"', f'out_dir="{out}"', f'sft.init_from="{base_dir}"', f'sft.method="{method}"',
        "sft.max_length=192", "sft.val_fraction=0.2", f"train.max_steps={steps}",
        "train.batch_size=4", "train.lr=3e-3", "train.warmup_steps=5", "train.eval_every=20",
        "train.checkpoint_every=20", "train.progress=false", 'train.dtype="float32"',
        'sft.lora_targets=["*.attn.q_proj", "*.attn.v_proj", "*.ff.up_proj"]', "sft.lora_rank=4"])
    return train_task(cfg, **kw)


def test_lora_sft_trains_adapters_only_and_lowers_heldout_loss(base_dir, tmp_path):
    r = run(base_dir, tmp_path / "lora", "lora")
    m = r.metrics
    assert m["trainable_share"] < 0.1
    # measured: 5.99 -> 5.87 nats (a random 2-layer base; rank-4 adapters, 40 steps)
    assert m["heldout_loss_after"] < m["heldout_loss_before"] - 0.05
    cfg = json.loads((tmp_path / "lora" / "adapter" / "adapter_config.json").read_text())
    assert cfg["rank"] == 4
    # the adapter loads back onto the untouched base and gives the merged model's logits
    base = load_model_dir(base_dir).model
    from lmforge.finetune import inject_lora, LoRAConfig

    inject_lora(base, LoRAConfig(rank=4, alpha=16.0, targets=tuple(cfg["targets"])))
    load_adapter(base, tmp_path / "lora" / "adapter")
    merged = load_model_dir(tmp_path / "lora").model
    x = torch.randint(0, 300, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(base.eval()(x), merged(x), atol=1e-4, rtol=1e-4)


def test_qlora_and_full_sft(base_dir, tmp_path):
    q = run(base_dir, tmp_path / "qlora", "qlora", steps=20)
    assert q.metrics["nf4_bytes_per_param"] < 0.6
    assert q.metrics["heldout_loss_after"] < q.metrics["heldout_loss_before"]
    assert (tmp_path / "qlora" / "adapter" / "adapter_model.safetensors").is_file()
    f = run(base_dir, tmp_path / "full", "full", steps=20)
    assert f.metrics["trainable_share"] == 1.0
    assert f.metrics["heldout_loss_after"] < f.metrics["heldout_loss_before"]
    assert (tmp_path / "full" / "model.safetensors").is_file()


def test_generate_with_adapter_flag(base_dir, tmp_path, capsys):
    from lmforge.cli.main import main

    run(base_dir, tmp_path / "lora", "lora", steps=20)
    args = ["generate", str(base_dir), "--prompt", "What is", "--greedy", "--max-new-tokens", "8"]
    assert main(args + ["--adapter", str(tmp_path / "lora" / "adapter")]) == 0
    with_adapter = capsys.readouterr().out
    assert main(["generate", str(tmp_path / "lora"), "--prompt", "What is", "--greedy",
                 "--max-new-tokens", "8"]) == 0
    assert capsys.readouterr().out == with_adapter  # = the merged model directory
    other = tmp_path / "other"
    torch.manual_seed(1)
    cfg = json.loads((base_dir / "config.json").read_text())
    save_model_dir(other, build_model(ModelConfig(**cfg)), load_model_dir(base_dir).tokenizer)
    assert main(["generate", str(other), "--prompt", "a", "--adapter",
                 str(tmp_path / "lora" / "adapter")]) == 2
    assert "fingerprint" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_adapter_checkpoints_are_small_and_resume_exactly(base_dir, tmp_path, method):
    from safetensors.torch import load_file

    extra = ["sft.lora_dropout=0.1"]  # dropout: the RNG state must come back too
    full = run(base_dir, tmp_path / "full", method, extra=extra)
    cut = run(base_dir, tmp_path / "cut", method, extra=extra, stop_at=30)  # checkpoint at 20
    assert cut.result.step == 30 and not (tmp_path / "cut" / "model.safetensors").exists()
    ckpt = list_checkpoints(tmp_path / "cut" / "checkpoints")[-1]
    state = load_checkpoint(ckpt)
    assert state["model_scope"] == "trainable" and state["step"] == 20
    assert all(k.endswith((".lora_A", ".lora_B")) for k in state["model"])
    torch.manual_seed(999)  # a new process
    resumed = run(base_dir, tmp_path / "cut", method, extra=extra, resume=True)
    assert resumed.result.step == 40 and resumed.metrics == full.metrics
    for f in ("adapter/adapter_model.safetensors", "model.safetensors"):
        a, b = (load_file(tmp_path / d / f) for d in ("full", "cut"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f
    # measured: 62 KB (lora and qlora) against 283 KB of weights alone; whole-model
    # checkpoints were 352 KB (lora), 191 KB (qlora, NF4 codes) and 882 KB (full)
    assert ckpt.stat().st_size < (tmp_path / "cut" / "model.safetensors").stat().st_size / 4
