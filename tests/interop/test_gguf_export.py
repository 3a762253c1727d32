"""GGUF export: tiny Llama and GPT-2 models built with ``transformers`` and imported to lmforge
are written as GGUF (f32, f16, q8_0, q4_0) and loaded back with transformers' GGUF loader:
its logits equal lmforge's (f32/f16 within float tolerance; q8_0/q4_0 equal to the model with
the weights dequantised from what was written), its tokenizer gives the original ids on the
parity corpus, the chat template survives, and ``lmforge import FILE.gguf`` gives the
same logits again."""

import json
import shutil
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

from tokenizers import (
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

from lmforge.cli.main import main
from lmforge.errors import TokenizerError
from lmforge.interop import import_hf
from lmforge.interop.gguf_export import dequantised, export_gguf, vocabulary
from lmforge.interop.gguf_tokenizer import PRE_SPLITS
from lmforge.modeldir import load_model_dir
from tests.interop.parity_corpus import CORPUS

VOCAB = 320
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
            "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
ERROR_BOUND = {"f32": 1e-5, "f16": 1e-3, "q8_0": 0.05, "q4_0": 0.6}
"""||logits - original|| / ||original|| allowed per storage type (measured: MEASURED)."""
MEASURED: dict[str, float] = {}


def _tokenizer(arch: str) -> transformers.PreTrainedTokenizerFast:
    """Byte-level BPE: GPT-2's split (gpt2) or Llama 3's (llama, which also adds BOS)."""
    tok = Tokenizer(models.BPE(ignore_merges=arch == "llama"))
    if arch == "llama":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(PRE_SPLITS["llama3"][0]), "isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                  special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4 + ["the quick brown fox jumps over the lazy dog"] * 8,
                            trainer)
    if arch == "llama":
        tok.post_processor = processors.TemplateProcessing(
            single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", 0)])
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                              eos_token="<|im_end|>")
    hf.chat_template = TEMPLATE
    return hf


def _hf_model(arch: str):
    torch.manual_seed(0)
    if arch == "llama":
        cfg = transformers.LlamaConfig(
            vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
            tie_word_embeddings=False, initializer_range=0.1, bos_token_id=0, eos_token_id=2)
        model = transformers.LlamaForCausalLM(cfg)
    else:
        cfg = transformers.GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4,
                                      n_positions=64, initializer_range=0.1, bos_token_id=0,
                                      eos_token_id=0)
        model = transformers.GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "ln_" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict:
    """Per architecture: the HF directory, the imported lmforge directory, the HF tokenizer;
    and a cache of exported files."""
    root, out = tmp_path_factory.mktemp("gguf_export"), {"files": {}}
    for arch in ("llama", "gpt2"):
        hf_dir = root / f"hf_{arch}"
        tok = _tokenizer(arch)
        _hf_model(arch).save_pretrained(hf_dir)
        tok.save_pretrained(hf_dir)
        out[arch] = (hf_dir, import_hf(hf_dir, root / f"lm_{arch}"), tok)
    out["root"] = root
    return out


def _export(work: dict, arch: str, quant: str) -> Path:
    key = (arch, quant)
    if key not in work["files"]:
        path = work["root"] / f"{arch}_{quant}.gguf"
        export_gguf(work[arch][1], path, quant)
        work["files"][key] = path
    return work["files"][key]


def _hf_gguf_model(path: Path, arch: str):
    # transformers reads GPT-2's GGUF context_length as n_ctx, not n_positions: give it
    extra = {"n_positions": 64} if arch == "gpt2" else {}
    return transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, **extra).eval()


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(ids)
    return (out.logits if hasattr(out, "logits") else out).float()  # (B, T, V)


IDS = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("quant", ["f32", "f16", "q8_0", "q4_0"])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_logits_match_transformers_gguf_loader(work, arch, quant):
    path = _export(work, arch, quant)
    theirs = _logits(_hf_gguf_model(path, arch), IDS)
    loaded = load_model_dir(work[arch][1])
    original = _logits(loaded.model, IDS)
    # reference: our model with every weight replaced by what a reader dequantises from the
    # file (quantisation blocks lie within rows, so the q/k row permutation and the fused
    # GPT-2 qkv commute with it; positions are kept in F32 like the export does)
    sd = loaded.model.state_dict()
    with torch.no_grad():
        for name, t in sd.items():
            as_name = "position_embd.weight" if name == "backbone.pos.weight" else name
            t.copy_(dequantised(as_name, t.float(), quant))
    expected = _logits(loaded.model, IDS)
    assert (theirs - expected).abs().max().item() <= 1e-4 * max(1.0, expected.abs().max().item())
    err = ((theirs - original).norm() / original.norm()).item()
    MEASURED[f"{arch} {quant}"] = err
    assert err <= ERROR_BOUND[quant]
    if quant == "f32":
        assert torch.allclose(theirs, original, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_tokenizer_and_chat_template(work, arch):
    path, (_, lm_dir, reference) = _export(work, arch, "f16"), work[arch]
    tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    ours = load_model_dir(lm_dir).tokenizer
    for text in CORPUS + ["<|im_start|>user\nhi<|im_end|>"]:
        want = reference(text)["input_ids"]
        assert tok(text)["input_ids"] == want, text
        assert ours.encode(text).ids == want, text
    assert tok.chat_template == TEMPLATE
    chat = [{"role": "user", "content": "hello there"}]
    assert (tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
            == reference.apply_chat_template(chat, tokenize=False, add_generation_prompt=True))


@pytest.mark.parametrize("quant", ["f32", "q8_0"])
def test_round_trip_through_lmforge_import(work, quant, tmp_path):
    path = _export(work, "llama", quant)
    assert main(["import", str(path), "--out", str(tmp_path / "back")]) == 0
    back = load_model_dir(tmp_path / "back")
    theirs = _logits(_hf_gguf_model(path, "llama"), IDS)
    assert torch.allclose(_logits(back.model, IDS), theirs, atol=1e-4, rtol=0)
    assert back.meta.generation.chat_template == TEMPLATE
    reference = work["llama"][2]
    assert all(back.tokenizer.encode(t).ids == reference(t)["input_ids"] for t in CORPUS)


def test_cli_export_and_refusals(work, tmp_path, capsys):
    lm_dir, out = work["gpt2"][1], tmp_path / "m.gguf"
    assert main(["export", str(lm_dir), "--format", "gguf", "--quant", "q8_0",
                 "--out", str(out)]) == 0
    assert "GGUF gpt2 (q8_0" in capsys.readouterr().out and out.is_file()
    cases = [  # (arguments, what the one-line error names)
        [str(lm_dir), "--format", "gguf", "--out", str(out)],  # exists, no --overwrite
        [str(lm_dir), "--format", "gguf", "--quant", "q3_k", "--out", str(tmp_path / "q.gguf")],
        [str(lm_dir), "--format", "hf", "--quant", "q8_0", "--out", str(tmp_path / "h")],
        [str(lm_dir), "--format", "gguf", "--out", str(lm_dir)],  # the input itself
    ]
    windowed = tmp_path / "windowed"  # a sliding window: GGUF llama cannot express it
    shutil.copytree(work["llama"][1], windowed)
    cfg = json.loads((windowed / "config.json").read_text())
    (windowed / "config.json").write_text(json.dumps(
        cfg | {"attention": "sliding_window", "attention_window": 16}))
    cases.append([str(windowed), "--format", "gguf", "--out", str(tmp_path / "w.gguf")])
    names = ["already exists", "--quant 'q3_k'", "--quant is for --format gguf", "the input",
             "sliding window"]
    for args, name in zip(cases, names):
        assert main(["export", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert name in err and len(err.splitlines()) == 1, err
    assert main(["export", str(lm_dir), "--format", "gguf", "--quant", "f32", "--overwrite",
                 "--out", str(out)]) == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporaries
    reader = gguf.GGUFReader(out)  # the overwritten file is whole, and f32 now
    assert {gguf.GGMLQuantizationType(t.tensor_type).name for t in reader.tensors} == {"F32"}


def test_qwen2_exports_as_qwen2(work, tmp_path):
    """Qwen2 (q/k/v biases, tied): written as GGUF qwen2, loaded as Qwen2ForCausalLM."""
    torch.manual_seed(0)
    cfg = transformers.Qwen2Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        tie_word_embeddings=True, initializer_range=0.1, bos_token_id=0, eos_token_id=2)
    model = transformers.Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(tmp_path / "hf")
    work["gpt2"][2].save_pretrained(tmp_path / "hf")
    info = export_gguf(import_hf(tmp_path / "hf", tmp_path / "lm"), tmp_path / "q.gguf", "f32")
    assert info["architecture"] == "qwen2" and info["pre"] == "gpt-2"
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="q.gguf")
    assert type(theirs).__name__ == "Qwen2ForCausalLM"
    assert torch.allclose(_logits(theirs.eval(), IDS), _logits(model, IDS), atol=1e-5, rtol=0)


def test_refuses_tokenizers_gguf_cannot_express():
    """A normalizer, a Metaspace (SentencePiece-style) split, an unknown regex: refused."""
    base = _tokenizer("gpt2").backend_tokenizer
    metaspace = Tokenizer.from_str(base.to_str())
    metaspace.pre_tokenizer = pre_tokenizers.Metaspace()
    odd = Tokenizer.from_str(base.to_str())
    odd.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\d"), "isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    lowered = Tokenizer.from_str(base.to_str())
    lowered.normalizer = normalizers.Lowercase()
    for tok, name in ((metaspace, "byte-level"), (odd, "matches no"), (lowered, "normalizer")):
        with pytest.raises(TokenizerError, match=name):
            vocabulary(tok, VOCAB)
    assert vocabulary(base, VOCAB)["pre"] == "gpt-2"
    odd.pre_tokenizer = pre_tokenizers.Sequence([  # each digit alone, then GPT-2's split
        pre_tokenizers.Split(Regex(r"\p{N}"), "isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    assert vocabulary(odd, VOCAB)["pre"] == "starcoder"


def test_report_measured():
    """Prints the measured errors against the original logits (run with -s)."""
    print({k: f"{v:.2e}" for k, v in MEASURED.items()})
