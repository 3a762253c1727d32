"""Mistral's sliding window imported exactly: a tiny random ``MistralForCausalLM`` with a window
of 4 tokens, run on 16-24 tokens (well past the window), gives the same logits (fp32, 1e-4)
and the same greedy tokens (lmforge's KV-cache generation vs ``generate``) after import, and
again after export (as MistralForCausalLM with its sliding_window). Qwen2 with every layer
sliding imports the same way; with only some layers sliding the old cap stays."""

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from tokenizers import Tokenizer, models, pre_tokenizers, trainers  # noqa: E402

from lmforge.inference import GenerationConfig, generate  # noqa: E402
from lmforge.interop import export_hf, import_hf  # noqa: E402
from lmforge.interop.hf.llama import config_from_hf  # noqa: E402
from lmforge.modeldir import load_model_dir  # noqa: E402
from lmforge.models import ModelConfig, build_model  # noqa: E402

VOCAB, WINDOW, CONTEXT, TOL = 320, 4, 64, 1e-4


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["a sliding window of four tokens"] * 4, trainer)
    return tok


def _hf_model(model_type: str = "mistral", **kw):
    cls_cfg, cls = {"mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
                    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM)}[model_type]
    cfg = cls_cfg(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=CONTEXT,
                  sliding_window=WINDOW, rms_norm_eps=1e-6, initializer_range=0.1,
                  bos_token_id=None, eos_token_id=None, tie_word_embeddings=False, **kw)
    torch.manual_seed(0)
    model = cls(cfg).eval()
    with torch.no_grad():  # random norms and biases, so their mapping is checked too
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model


def _save(model, tok: Tokenizer, path: Path) -> Path:
    model.save_pretrained(path)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>")
    fast.save_pretrained(path)
    return path


def _compare(hf_model, ours, name: str) -> None:
    """Logits within TOL on 16-24 tokens; the same 18 greedy tokens after a 6-token prompt."""
    g = torch.Generator().manual_seed(1)
    for length in (16, 20, 24):
        x = torch.randint(0, VOCAB, (2, length), generator=g)
        with torch.no_grad():
            diff = (ours(x) - hf_model(x).logits).abs().max().item()
        assert diff <= TOL, f"{name}, {length} tokens: max abs logit difference {diff:.2e}"
    prompt = x[:, :6]
    hf_model.generation_config.eos_token_id = None  # never stop early
    ref = hf_model.generate(prompt, max_new_tokens=18, do_sample=False, pad_token_id=0)[:, 6:]
    out = generate(ours, prompt, GenerationConfig(max_new_tokens=18, temperature=0))
    assert torch.equal(out, ref), name


def _without_window(ours):
    """The same weights with full causal attention."""
    cfg = ModelConfig(**{**vars(ours.cfg), "attention": "auto", "attention_window": 0})
    plain = build_model(cfg).eval()
    plain.load_state_dict(ours.state_dict())
    return plain


def test_mistral_sliding_window_import_and_export(tokenizer, tmp_path):
    hf = _hf_model()
    ours = load_model_dir(import_hf(_save(hf, tokenizer, tmp_path / "hf"), tmp_path / "lm")).model
    cfg = ours.cfg
    assert (cfg.attention, cfg.attention_window, cfg.context_length) == \
        ("sliding_window", WINDOW, CONTEXT)  # the real context, no cap
    _compare(hf, ours, "mistral import")
    x = torch.randint(0, VOCAB, (1, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():  # the window is what makes them agree: without it they differ
        assert (_without_window(ours)(x) - hf(x).logits).abs().max() > 1e-2

    out = export_hf(tmp_path / "lm", tmp_path / "hf-out")
    written = json.loads((out / "config.json").read_text())
    assert written["sliding_window"] == WINDOW and written["model_type"] == "mistral"
    assert written["architectures"] == ["MistralForCausalLM"]
    back = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(back).__name__ == "MistralForCausalLM" and back.config.sliding_window == WINDOW
    _compare(back, ours, "mistral export")


def test_qwen2_every_layer_sliding(tokenizer, tmp_path):
    hf = _hf_model("qwen2", use_sliding_window=True, max_window_layers=0)
    assert set(hf.config.layer_types) == {"sliding_attention"}
    ours = load_model_dir(import_hf(_save(hf, tokenizer, tmp_path / "hf"), tmp_path / "lm")).model
    assert (ours.cfg.attention, ours.cfg.attention_window) == ("sliding_window", WINDOW)
    _compare(hf, ours, "qwen2 sliding")


def test_window_config_mapping():
    base = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
                num_attention_heads=4, max_position_embeddings=CONTEXT)
    mistral = config_from_hf({"model_type": "mistral", **base})  # transformers' default: 4096
    assert (mistral.attention, mistral.attention_window) == ("sliding_window", 4096)
    full = config_from_hf({"model_type": "mistral", "sliding_window": None, **base})
    assert (full.attention, full.attention_window, full.context_length) == ("auto", 0, CONTEXT)
    qwen = {"model_type": "qwen2", "use_sliding_window": True, "sliding_window": 8, **base}
    some = config_from_hf({**qwen, "max_window_layers": 2})  # layers 2, 3 slide: the old cap
    assert (some.attention, some.attention_window, some.context_length) == ("auto", 0, 8)
    every = config_from_hf({**qwen, "max_window_layers": 0})
    assert (every.attention, every.attention_window, every.context_length) == \
        ("sliding_window", 8, CONTEXT)
    none = config_from_hf({**qwen, "layer_types": ["full_attention"] * 4})
    assert (none.attention_window, none.context_length) == (0, CONTEXT)
    assert config_from_hf({**qwen, "use_sliding_window": False}).attention_window == 0
