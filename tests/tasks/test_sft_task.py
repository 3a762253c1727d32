"""`task = "sft"`: instruction tuning of a (tiny) pretrained causal LM, LoRA / QLoRA / full."""

import json

import pytest
import torch

from lmforge.data.chat import builtin_instructions_path
from lmforge.finetune import load_adapter, load_with_adapter
from lmforge.errors import ConfigError
from lmforge.modeldir import Generation, ModelMeta, load_model_dir, save_model_dir
from lmforge.models import ModelConfig, build_model
from lmforge.tasks import train_task
from lmforge.tokenizers import train_tokenizer
from lmforge.tasks import RunConfig
from lmforge.tasks.sft import sft_pad_id
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
    return train_task(sft_config(base_dir, out, method, steps, extra), **kw)


def sft_config(base_dir, out, method, steps=40, extra=(), after=()):
    """The run config of :func:`run`; ``after`` overrides come last (they win)."""
    return RunConfig.load(None, [*extra,
        'task="sft"', f'out_dir="{out}"', f'sft.init_from="{base_dir}"', f'sft.mode="{method}"',
        "sft.max_length=192", "sft.val_fraction=0.2", f"train.max_steps={steps}",
        "train.batch_size=4", "train.lr=3e-3", "train.warmup_steps=5", "train.eval_every=20",
        "train.checkpoint_every=20", "train.progress=false", 'train.dtype="float32"',
        'sft.lora.targets=["*.attn.q_proj", "*.attn.v_proj", "*.ff.up_proj"]', "sft.lora.rank=4",
        *after])


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
    # the merged directory: the adapter merged into the full-precision base (read tensor by
    # tensor at the end of training), the same weights as loading the two afterwards
    merged = load_model_dir(tmp_path / "qlora").model.state_dict()
    ref = load_with_adapter(base_dir, tmp_path / "qlora" / "adapter").model.state_dict()
    assert merged.keys() == ref.keys()
    assert all(torch.equal(merged[k], ref[k]) for k in ref)
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

    extra = ["sft.lora.dropout=0.1"]  # dropout: the RNG state must come back too
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


def test_resume_is_checked_against_the_runs_config(base_dir, tmp_path):
    run(base_dir, tmp_path / "r", "lora", steps=2)  # run.toml + a checkpoint at step 2
    assert (tmp_path / "r" / "run.toml").is_file()
    changed = sft_config(base_dir, tmp_path / "r", "lora", steps=2, after=["sft.lora.rank=8"])
    with pytest.raises(ConfigError, match=r"--resume: sft\.lora\.rank differs .*4, now 8"):
        train_task(changed, resume=True)


TEMPLATE = ("{% for m in messages %}<<{{ m['role'] }}>> {{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<<assistant>> {% endif %}")


@pytest.fixture(scope="module")
def chat_base_dir(base_dir, tmp_path_factory):
    """The tiny base with generation settings in its meta.json, as an import writes them."""
    d = tmp_path_factory.mktemp("chat-base")
    lm = load_model_dir(base_dir)
    eos = lm.tokenizer.token_to_id("<|endoftext|>")
    meta = ModelMeta(generation=Generation(chat_template=TEMPLATE, eos_token_ids=[eos, 3],
                                           temperature=0.6))
    save_model_dir(d, lm.model, lm.tokenizer, meta)
    return d


def test_merged_directory_keeps_the_bases_chat_template_and_stop_tokens(chat_base_dir, tmp_path):
    base_gen = json.loads((chat_base_dir / "meta.json").read_text())["generation"]
    for method in ("lora", "full"):
        run(chat_base_dir, tmp_path / method, method, steps=2)
        meta = json.loads((tmp_path / method / "meta.json").read_text())
        gen = meta["generation"]
        assert gen["chat_template"] == TEMPLATE, method
        assert gen["eos_token_ids"] == base_gen["eos_token_ids"] and gen["temperature"] == 0.6
    # sft.template replaces the base's: the directory records the template it trained with
    other = TEMPLATE.replace("<<", "[[").replace(">>", "]]")
    run(chat_base_dir, tmp_path / "own", "lora", steps=2,
        extra=[f"sft.template={json.dumps(other)}"])
    gen = json.loads((tmp_path / "own" / "meta.json").read_text())["generation"]
    assert gen["chat_template"] == other and gen["eos_token_ids"] == base_gen["eos_token_ids"]


def test_pad_id_tokenizer_then_generation_then_eos(base_dir):
    tok = load_model_dir(base_dir).tokenizer
    eos = tok.token_to_id("<|endoftext|>")
    assert sft_pad_id(tok, ModelMeta()) == eos  # no pad token, no settings: the eos token
    assert sft_pad_id(tok, ModelMeta(generation=Generation(eos_token_ids=[7]))) == 7
    assert sft_pad_id(tok, ModelMeta(generation=Generation(pad_token_id=5,
                                                           eos_token_ids=[7]))) == 5
    tok.enable_padding(pad_id=9)
    assert sft_pad_id(tok, ModelMeta(generation=Generation(pad_token_id=5))) == 9
