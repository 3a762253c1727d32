"""The Llama-like decoder families, both ways: a tiny random ``transformers`` model of each
(Qwen2 with q/k/v biases, Qwen3 with qk-norm, Mistral with a 4-token sliding window run on
20-24 tokens, Gemma with (1 + w) RMSNorm, GeGLU, scaled embeddings and a head width of its
own) is imported, gives the same logits (fp32, 1e-4) and the same greedy tokens (lmforge's
KV-cache generation vs ``generate``, past the window for Mistral), and is exported back to a
directory ``transformers`` loads with the same logits."""

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from tokenizers import Tokenizer, models, pre_tokenizers, trainers  # noqa: E402

from lmforge.errors import ConfigError  # noqa: E402
from lmforge.inference import GenerationConfig, generate  # noqa: E402
from lmforge.interop import export_hf, import_hf  # noqa: E402
from lmforge.interop.hf import family_for_config  # noqa: E402
from lmforge.modeldir import load_model_dir  # noqa: E402
from lmforge.models import ModelConfig, build_model  # noqa: E402

VOCAB, WINDOW, TOL = 320, 4, 1e-4
BASE = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
            rms_norm_eps=1e-6, initializer_range=0.1, bos_token_id=None, eos_token_id=None)
FAMILIES = {  # model_type -> (extra config, exported architecture, lmforge fields to check)
    "qwen2": (dict(tie_word_embeddings=False), "LlamaForCausalLM", dict(attn_bias=True)),
    "qwen3": (dict(head_dim=24, tie_word_embeddings=True, attention_bias=True),
              "Qwen3ForCausalLM", dict(qk_norm=True, head_dim=24)),
    "mistral": (dict(sliding_window=WINDOW, tie_word_embeddings=False), "MistralForCausalLM",
                dict(attention="sliding_window", attention_window=WINDOW)),
    "gemma": (dict(head_dim=32, num_key_value_heads=1, tie_word_embeddings=True),
              "GemmaForCausalLM", dict(norm="rmsnorm_1p", activation="geglu_tanh",
                                       scale_embeddings=True, head_dim=32, n_kv_head=1)),
}


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["four decoder families, both ways"] * 4, trainer)
    return tok


def _hf_model(model_type: str):
    cfg = transformers.AutoConfig.for_model(model_type, **(BASE | FAMILIES[model_type][0]))
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():  # random norms and biases, so their mapping is checked too
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model


def _save(model, tok: Tokenizer, path: Path) -> Path:
    model.save_pretrained(path)
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>").save_pretrained(path)
    return path


def _compare(hf_model, ours, name: str) -> None:
    """Logits within TOL on 12-24 tokens; the same 14 greedy tokens after a 6-token prompt."""
    g = torch.Generator().manual_seed(1)
    for length in (12, 24):
        x = torch.randint(0, VOCAB, (2, length), generator=g)
        with torch.no_grad():
            diff = (ours(x) - hf_model(x).logits).abs().max().item()
        assert diff <= TOL, f"{name}, {length} tokens: max abs logit difference {diff:.2e}"
    prompt = x[:, :6]
    hf_model.generation_config.eos_token_id = None  # never stop early
    ref = hf_model.generate(prompt, max_new_tokens=14, do_sample=False, pad_token_id=0)[:, 6:]
    out = generate(ours, prompt, GenerationConfig(max_new_tokens=14, temperature=0))
    assert torch.equal(out, ref), name


@pytest.mark.parametrize("model_type", list(FAMILIES))
def test_import_export_parity(model_type, tokenizer, tmp_path):
    hf = _hf_model(model_type)
    ours = load_model_dir(import_hf(_save(hf, tokenizer, tmp_path / "hf"), tmp_path / "lm")).model
    for field, value in FAMILIES[model_type][2].items():
        assert getattr(ours.cfg, field) == value, field
    _compare(hf, ours, f"{model_type} import")

    out = export_hf(tmp_path / "lm", tmp_path / "hf-out")
    arch = FAMILIES[model_type][1]
    assert json.loads((out / "config.json").read_text())["architectures"] == [arch]
    back = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(back).__name__ == arch
    _compare(back, ours, f"{model_type} export")


def test_qwen3_sliding_window_exports_as_qwen3(tmp_path):
    """A qk-norm model with a window on every layer: Qwen3 with use_sliding_window."""
    cfg = ModelConfig(vocab_size=VOCAB, context_length=64, d_model=64, n_layer=2, n_head=4,
                      n_kv_head=2, d_ff=96, activation="swiglu", norm="rmsnorm", norm_eps=1e-6,
                      positional="rope", bias=False, tie_embeddings=False, qk_norm=True,
                      attention="sliding_window", attention_window=WINDOW)
    family = family_for_config(cfg)
    hf_cfg = family.config_to_hf(cfg)
    assert (hf_cfg["model_type"], hf_cfg["sliding_window"]) == ("qwen3", WINDOW)
    torch.manual_seed(0)
    ours = build_model(cfg).eval()
    hf = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**hf_cfg)).eval()
    hf.load_state_dict(family.state_to_hf(ours.state_dict(), cfg))
    x = torch.randint(0, VOCAB, (1, 20), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (ours(x) - hf(x).logits).abs().max().item() <= TOL


def test_gemma_norm_and_options():
    """(1 + w) RMSNorm against Gemma's; unsupported options refused in one line."""
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm

    from lmforge.blocks.norms import make_norm  # (tests only) the layer itself

    ref, ours = GemmaRMSNorm(16, eps=1e-6), make_norm("rmsnorm_1p", 16, 1e-6)
    assert torch.equal(ours.weight, ref.weight)  # both start at zero: scale 1
    with torch.no_grad():
        ref.weight.normal_()
        ours.weight.copy_(ref.weight)
    x = torch.randn(3, 5, 16)
    assert torch.allclose(ours(x), ref(x), atol=1e-6)
    gemma = family_for_config(ModelConfig(
        vocab_size=VOCAB, d_model=64, n_head=4, head_dim=32, d_ff=96, activation="geglu_tanh",
        norm="rmsnorm_1p", positional="rope", bias=False, scale_embeddings=True))
    assert gemma.name == "gemma"
    with pytest.raises(ConfigError, match="hidden_act='relu'"):
        gemma.config_from_hf({"model_type": "gemma", **BASE, "hidden_act": "relu"})
    with pytest.raises(ConfigError, match="scale_embeddings"):  # Llama has no embedding scale
        family_for_config(ModelConfig(vocab_size=VOCAB, d_model=64, n_head=4, d_ff=96,
                                      activation="swiglu", norm="rmsnorm", positional="rope",
                                      bias=False, scale_embeddings=True))
