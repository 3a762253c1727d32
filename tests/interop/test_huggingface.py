"""Hugging Face import/export: for small randomly initialised ``transformers`` models of each
family, the imported lmforge model gives the same logits and greedy tokens, and so does the
model ``transformers`` loads back from the exported directory."""

from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from tokenizers import Tokenizer, models, pre_tokenizers, trainers  # noqa: E402

from lmforge.cli.main import main  # noqa: E402
from lmforge.errors import CheckpointError, ConfigError  # noqa: E402
from lmforge.inference import GenerationConfig, generate  # noqa: E402
from lmforge.interop import export_hf, import_hf  # noqa: E402
from lmforge.interop.hf.files import byte_level_bpe  # noqa: E402
from lmforge.modeldir import load_model_dir, save_model_dir  # noqa: E402
from lmforge.models import ModelConfig, build_model  # noqa: E402

VOCAB = 320  # model vocabulary; the tokenizer has fewer tokens
TOL = 1e-4
TEXT = ["the quick brown fox jumps over the lazy dog", "a model directory holds the weights",
        "hugging face checkpoints go in and out", "grouped-query attention shares keys"] * 4
MEASURED: dict[str, float] = {}


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXT, trainer)
    assert tok.get_vocab_size() <= VOCAB
    return tok


def _save_hf(model, tok: Tokenizer, path: Path, vocab_merges: bool = False, **kw) -> Path:
    model.save_pretrained(path, **kw)
    if vocab_merges:  # GPT-2's original files: vocab.json + merges.txt, no tokenizer.json
        tok.model.save(str(path))
    else:
        transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>"
                                             ).save_pretrained(path)
    return path


def _compare(hf_model, ours, name: str) -> None:
    """Logits within TOL (fp32) and identical greedy continuations."""
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, VOCAB, (2, 24), generator=g)
    with torch.no_grad():
        diff = (ours(x) - hf_model(x).logits).abs().max().item()
    MEASURED[name] = max(MEASURED.get(name, 0.0), diff)
    assert diff <= TOL, f"{name}: max abs logit difference {diff:.2e}"
    prompt = x[:1, :5]
    hf_model.generation_config.eos_token_id = None  # never stop early: compare 20 tokens
    ref = hf_model.generate(prompt, max_new_tokens=20, do_sample=False, pad_token_id=0)[:, 5:]
    out = generate(ours, prompt, GenerationConfig(max_new_tokens=20, temperature=0))
    assert torch.equal(out, ref), name


def _round_trip(hf_model, src: Path, tmp_path: Path, name: str):
    """import -> compare -> export -> load with transformers -> compare."""
    ours = load_model_dir(import_hf(src, tmp_path / "lmforge")).model
    _compare(hf_model, ours, f"{name} import")
    exported = export_hf(tmp_path / "lmforge", tmp_path / "hf-out")
    back = transformers.AutoModelForCausalLM.from_pretrained(exported).eval()
    _compare(back, ours, f"{name} export")
    return ours, back


def test_gpt2(tokenizer, tmp_path):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=48, n_layer=2, n_head=4,
                                  resid_pdrop=0, embd_pdrop=0, attn_pdrop=0, initializer_range=0.1,
                                  bos_token_id=None, eos_token_id=None)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    src = _save_hf(hf, tokenizer, tmp_path / "hf", vocab_merges=True)
    _, back = _round_trip(hf, src, tmp_path, "gpt2")
    assert type(back).__name__ == "GPT2LMHeadModel"
    imported = load_model_dir(tmp_path / "lmforge")
    assert imported.meta.source.family == "gpt2"
    # the tokenizer built from vocab.json + merges.txt encodes like the original, and the
    # exported tokenizer loads in transformers
    text = "the lazy fox holds checkpoints"
    assert imported.tokenizer.encode(text).ids == tokenizer.encode(text).ids
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf-out")
    assert hf_tok(text)["input_ids"] == tokenizer.encode(text).ids


def _rope_kwargs(theta: float, scaling: dict | None) -> dict:
    """transformers 5 takes ``rope_parameters``; 4.x ``rope_theta`` + ``rope_scaling``."""
    if "rope_parameters" in transformers.LlamaConfig().to_dict():
        return {"rope_parameters": {"rope_type": "default", "rope_theta": theta, **(scaling or {})}}
    return {"rope_theta": theta, "rope_scaling": scaling}


LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 32}
LLAMA_VARIANTS = {
    "gqa-untied": dict(num_key_value_heads=2, tie_word_embeddings=False),
    "tied": dict(tie_word_embeddings=True),
    "llama3-rope": dict(num_key_value_heads=2, tie_word_embeddings=False, rope=LLAMA3),
    "linear-rope-bias-headdim": dict(num_key_value_heads=1, head_dim=8, attention_bias=True,
                                     mlp_bias=True, rope={"rope_type": "linear", "factor": 2.0}),
}


def _llama(variant: dict, model_type: str = "llama"):
    variant = dict(variant)
    rope = _rope_kwargs(50000.0, variant.pop("rope", None))
    cls_cfg, cls = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
                    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
                    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM)}[model_type]
    cfg = cls_cfg(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=64, rms_norm_eps=1e-6,
                  initializer_range=0.1, bos_token_id=None, eos_token_id=None, **rope, **variant)
    torch.manual_seed(0)
    model = cls(cfg).eval()
    with torch.no_grad():  # random norm weights and biases, so their mapping is checked too
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.mark.parametrize("name", LLAMA_VARIANTS)
def test_llama(tokenizer, tmp_path, name):
    hf = _llama(LLAMA_VARIANTS[name])
    src = _save_hf(hf, tokenizer, tmp_path / "hf")
    ours, back = _round_trip(hf, src, tmp_path, f"llama {name}")
    assert type(back).__name__ == "LlamaForCausalLM"
    # the RoPE frequencies (scaled or not) are transformers' to the last bit
    assert torch.equal(ours.backbone.layers[0].attn.rope.inv_freq, hf.model.rotary_emb.inv_freq)


def test_llama_sharded_and_pytorch_bin(tokenizer, tmp_path):
    hf = _llama(LLAMA_VARIANTS["gqa-untied"])
    sharded = _save_hf(hf, tokenizer, tmp_path / "sharded", max_shard_size="100KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    _compare(hf, load_model_dir(import_hf(sharded, tmp_path / "a")).model, "llama sharded")
    bin_dir = _save_hf(hf, tokenizer, tmp_path / "bin")
    for f in bin_dir.glob("model*.safetensors*"):
        f.unlink()
    torch.save(hf.state_dict(), bin_dir / "pytorch_model.bin")
    _compare(hf, load_model_dir(import_hf(bin_dir, tmp_path / "b")).model, "llama pytorch_model.bin")


@pytest.mark.parametrize("model_type", ["mistral", "qwen2"])
def test_mistral_qwen2(tokenizer, tmp_path, model_type):
    hf = _llama(dict(num_key_value_heads=2), model_type)
    src = _save_hf(hf, tokenizer, tmp_path / "hf")
    _round_trip(hf, src, tmp_path, model_type)  # exported as LlamaForCausalLM


def test_import_dtype(tokenizer, tmp_path):
    hf = _llama(LLAMA_VARIANTS["tied"])
    lm = load_model_dir(import_hf(_save_hf(hf, tokenizer, tmp_path / "hf"), tmp_path / "bf16",
                                  dtype="bfloat16"))
    assert lm.meta.source.dtype == "bfloat16"


FRESH = {
    "gpt2-like": ModelConfig(vocab_size=VOCAB, context_length=64, d_model=48, n_layer=2, n_head=4,
                             activation="gelu", tie_embeddings=False, init_std=0.1),
    "llama-like": ModelConfig(vocab_size=VOCAB, context_length=64, d_model=64, n_layer=2, n_head=4,
                              n_kv_head=2, d_ff=96, activation="swiglu", norm="rmsnorm",
                              positional="rope", bias=False, init_std=0.1,
                              rope_scaling={"rope_type": "linear", "factor": 4.0}),
}


@pytest.mark.parametrize("name", FRESH)
def test_export_fresh_lmforge_model(tokenizer, tmp_path, name):
    torch.manual_seed(0)
    model = build_model(FRESH[name]).eval()
    save_model_dir(tmp_path / "lm", model, tokenizer)
    hf = transformers.AutoModelForCausalLM.from_pretrained(export_hf(tmp_path / "lm", tmp_path / "hf"))
    _compare(hf.eval(), model, f"fresh {name}")


def test_unsupported_model_type(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "gemma2", "vocab_size": 10}')
    with pytest.raises(ConfigError, match="'gemma2' is not supported; supported: "):
        import_hf(tmp_path, tmp_path / "out")


def test_unsupported_options(tokenizer, tmp_path):
    hf = _llama({"rope": {"rope_type": "linear", "factor": 2.0}})
    src = _save_hf(hf, tokenizer, tmp_path / "hf")
    cfg = (src / "config.json").read_text().replace('"linear"', '"yarn"')
    (src / "config.json").write_text(cfg)
    with pytest.raises(ConfigError, match="'yarn' is not supported .* default, linear, llama3"):
        import_hf(src, tmp_path / "out")


def test_extra_tensors_refused(tokenizer, tmp_path):
    hf = _llama(LLAMA_VARIANTS["tied"])
    src = _save_hf(hf, tokenizer, tmp_path / "hf")
    sd = dict(hf.state_dict())
    sd["model.layers.0.self_attn.q_norm.weight"] = torch.ones(16)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items() if k != "lm_head.weight"},
              str(src / "model.safetensors"))
    with pytest.raises(CheckpointError, match="q_norm"):
        import_hf(src, tmp_path / "out")


def test_unexportable_config(tokenizer, tmp_path):
    cfg = ModelConfig(vocab_size=VOCAB, context_length=32, d_model=32, n_layer=1, n_head=2,
                      positional="alibi")
    save_model_dir(tmp_path / "lm", build_model(cfg), tokenizer)
    with pytest.raises(ConfigError, match=r"for gpt2: positional='alibi' \(needs 'learned'\).*"
                                          r"for llama: positional='alibi' \(needs 'rope'\)"):
        export_hf(tmp_path / "lm", tmp_path / "hf")


def test_cli(tokenizer, tmp_path, capsys):
    hf = _llama(LLAMA_VARIANTS["tied"])
    src = _save_hf(hf, tokenizer, tmp_path / "hf")
    assert main(["import", str(src), "--out", str(tmp_path / "lm")]) == 0
    assert main(["export", str(tmp_path / "lm"), "--format", "hf", "--out", str(tmp_path / "x")]) == 0
    assert "LlamaForCausalLM" in capsys.readouterr().out
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text('{"model_type": "gemma2"}')
    assert main(["import", str(tmp_path / "bad"), "--out", str(tmp_path / "o")]) == 2
    assert main(["import", str(tmp_path / "m.gguf"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "model_type 'gemma2' is not supported" in err and "GGUF" in err


def test_generation_settings_recorded(tokenizer, tmp_path):
    """generation_config.json's eos ids (a list, as Llama 3.1's), config.json's BOS and the
    chat template in tokenizer_config.json reach meta.json's "generation" entry, and
    generation_settings reads them back (a trained model falls back to <|endoftext|>)."""
    import json

    from lmforge.inference import generation_settings

    hf = _llama(LLAMA_VARIANTS["tied"])
    src = _save_hf(hf, tokenizer, tmp_path / "hf")
    (src / "generation_config.json").write_text(json.dumps({"eos_token_id": [5, 7],
                                                            "bos_token_id": 3}))
    tc = json.loads((src / "tokenizer_config.json").read_text())
    tc["chat_template"] = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    (src / "tokenizer_config.json").write_text(json.dumps(tc))
    lm = load_model_dir(import_hf(src, tmp_path / "lm"))
    eot = tokenizer.token_to_id("<|endoftext|>")
    assert lm.meta.generation.eos_token_ids == [5, 7, eot]
    s = generation_settings(lm.meta, lm.tokenizer)
    assert (s.eos_token_ids, s.bos_token_id, s.chat_template) == ([5, 7, eot], 3, tc["chat_template"])
    trained = generation_settings({}, tokenizer)
    assert trained.eos_token_ids == [eot] and trained.chat_template is None


def test_byte_level_bpe_matches_original(tokenizer, tmp_path):
    tokenizer.model.save(str(tmp_path))
    bpe = models.BPE.from_file(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    built = byte_level_bpe(bpe, ["<|endoftext|>"])
    text = "jumps over <|endoftext|> the weights"
    assert built.encode(text).ids == tokenizer.encode(text).ids


def test_report_measured():  # last: print the measured differences (pytest -s shows them)
    for name, diff in MEASURED.items():
        print(f"{name:40s} max |logit diff| = {diff:.2e}")
