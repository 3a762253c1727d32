"""LoRA adapters in PEFT's format: an lmforge adapter exported as PEFT and loaded by
``peft.PeftModel.from_pretrained`` onto the transformers model gives lmforge's adapted logits,
and a PEFT adapter (randomised lora_B) imported into lmforge gives PEFT's logits; features
lmforge has no equivalent for are refused naming the field."""

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from safetensors.torch import load_file  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers, trainers  # noqa: E402

from lmforge.cli.main import main  # noqa: E402
from lmforge.errors import ConfigError  # noqa: E402
from lmforge.finetune import LoRAConfig, inject_lora, load_adapter, save_adapter  # noqa: E402
from lmforge.finetune.peft_format import export_peft, import_peft  # noqa: E402
from lmforge.interop import import_hf  # noqa: E402
from lmforge.modeldir import load_model_dir  # noqa: E402

VOCAB = 96
TOL = 1e-5
MEASURED: dict[str, float] = {}


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<|endoftext|>"],
                                  show_progress=False)
    tok.train_from_iterator(["a tiny text for a tiny tokenizer"] * 4, trainer)
    return tok


def _hf_model(family: str):
    torch.manual_seed(0)
    if family == "llama":
        cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=48,
                                       num_hidden_layers=2, num_attention_heads=4,
                                       num_key_value_heads=2, max_position_embeddings=64,
                                       tie_word_embeddings=False)
        return transformers.LlamaForCausalLM(cfg).eval()
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2,
                                  n_head=4, tie_word_embeddings=True)
    return transformers.GPT2LMHeadModel(cfg).eval()


def _base(family: str, tokenizer, tmp_path: Path):
    """(transformers model, its directory, the lmforge import of it)."""
    hf = _hf_model(family)
    src = tmp_path / f"hf-{family}"
    hf.save_pretrained(src)
    transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer,
                                         eos_token="<|endoftext|>").save_pretrained(src)
    return hf, src, import_hf(src, tmp_path / f"lmforge-{family}")


def _ids() -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(3))


def _diff(a: torch.Tensor, b: torch.Tensor, name: str) -> float:
    d = (a - b).abs().max().item()
    MEASURED[name] = d
    return d


def _randomise_b(model) -> None:
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


@pytest.mark.parametrize("family,targets", [
    ("llama", ["*.attn.q_proj", "*.attn.v_proj", "*.ff.down_proj"]),
    ("gpt2", ["*.attn.q_proj", "*.attn.v_proj", "*.attn.o_proj", "*.ff.up_proj"])])
def test_export_loads_in_peft(family, targets, tokenizer, tmp_path):
    hf, src, ours_dir = _base(family, tokenizer, tmp_path)
    lm = load_model_dir(ours_dir)
    inject_lora(lm.model, LoRAConfig(rank=4, alpha=8.0, targets=targets))
    _randomise_b(lm.model)
    save_adapter(lm.model, tmp_path / "adapter")
    assert main(["export", str(tmp_path / "adapter"), "--format", "peft", "--base",
                 str(ours_dir), "--out", str(tmp_path / "peft")]) == 0
    cfg = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["task_type"] == "CAUSAL_LM" and cfg["r"] == 4
    keys = load_file(str(tmp_path / "peft" / "adapter_model.safetensors"))
    hf_module = {"llama": "model.layers.0.self_attn.q_proj", "gpt2": "transformer.h.0.attn.c_attn"}
    assert f"base_model.model.{hf_module[family]}.lora_A.weight" in keys
    peft_model = peft.PeftModel.from_pretrained(hf, tmp_path / "peft").eval()
    x = _ids()
    with torch.no_grad():
        want, got = lm.model.eval()(x), peft_model(x).logits
    assert _diff(got, want, f"{family} export") <= TOL
    with peft_model.disable_adapter(), torch.no_grad():  # the adapter really changes the output
        assert (peft_model(x).logits - want).abs().max() > 1e-3


@pytest.mark.parametrize("family,targets", [
    ("llama", ["q_proj", "k_proj", "gate_proj", "o_proj"]),
    ("gpt2", ["c_attn", "c_fc"])])
def test_peft_adapter_imports(family, targets, tokenizer, tmp_path):
    hf, src, ours_dir = _base(family, tokenizer, tmp_path)
    lora = peft.LoraConfig(r=4, lora_alpha=16, target_modules=targets, task_type="CAUSAL_LM",
                           rank_pattern={targets[1]: 2}, alpha_pattern={targets[1]: 3},
                           fan_in_fan_out=family == "gpt2")
    peft_model = peft.get_peft_model(hf, lora).eval()
    _randomise_b(peft_model)
    peft_model.save_pretrained(tmp_path / "peft")
    assert main(["import", str(tmp_path / "peft"), "--adapter-for", str(ours_dir),
                 "--out", str(tmp_path / "adapter")]) == 0
    lm = load_model_dir(ours_dir)
    load_adapter(lm.model, tmp_path / "adapter")  # the base fingerprint matches
    x = _ids()
    with torch.no_grad():
        want, got = peft_model(x).logits, lm.model.eval()(x)
    assert _diff(got, want, f"{family} import") <= TOL
    # and back: the re-exported adapter is still PEFT's function
    export_peft(tmp_path / "adapter", ours_dir, _mkdir(tmp_path / "again"))
    again = peft.PeftModel.from_pretrained(_hf_model(family), tmp_path / "again").eval()
    with torch.no_grad():
        assert _diff(again(x).logits, want, f"{family} round trip") <= TOL


def _mkdir(p: Path) -> Path:
    p.mkdir()
    return p


@pytest.mark.parametrize("field,value,message", [
    ("use_dora", True, "use_dora"), ("use_rslora", True, "use_rslora"),
    ("modules_to_save", ["lm_head"], "modules_to_save"), ("bias", "all", "bias"),
    ("peft_type", "IA3", "peft_type"), ("task_type", "SEQ_2_SEQ_LM", "task_type")])
def test_unsupported_peft_features_refused(field, value, message, tokenizer, tmp_path):
    hf, src, ours_dir = _base("llama", tokenizer, tmp_path)
    peft.get_peft_model(hf, peft.LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(
        tmp_path / "peft")
    f = tmp_path / "peft" / "adapter_config.json"
    f.write_text(json.dumps(json.loads(f.read_text()) | {field: value}))
    with pytest.raises(ConfigError, match=message):
        import_peft(tmp_path / "peft", ours_dir, tmp_path / "out")


def test_unmappable_module_refused(tokenizer, tmp_path):
    hf, src, ours_dir = _base("llama", tokenizer, tmp_path)
    peft.get_peft_model(hf, peft.LoraConfig(r=2, target_modules=["embed_tokens"])
                        ).save_pretrained(tmp_path / "peft")
    with pytest.raises(ConfigError, match="embed_tokens|lora_embedding"):
        import_peft(tmp_path / "peft", ours_dir, tmp_path / "out")
    # the CLI: one line naming the missing option, exit code 2
    assert main(["export", str(tmp_path / "peft"), "--format", "peft", "--out",
                 str(tmp_path / "o")]) == 2
