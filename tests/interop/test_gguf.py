"""GGUF import: a small random ``transformers`` Llama/Qwen2 is written as llama.cpp's converter
writes it (names from the gguf package's own HF->GGUF map, q/k rows permuted for llama, 2-D
weights quantised), imported, and compared with the HF model holding the same dequantised
weights."""

import json
import math

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")

from tokenizers import Tokenizer, models, pre_tokenizers, trainers  # noqa: E402

from lmforge.errors import CheckpointError, ConfigError  # noqa: E402
from lmforge.inference import GenerationConfig, generate  # noqa: E402
from lmforge.interop.gguf import import_gguf  # noqa: E402
from lmforge.io import load_model_dir  # noqa: E402

VOCAB, THETA, TOL = 320, 10000.0, 1e-4
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 32}
Q = gguf.GGMLQuantizationType
MEASURED: dict[str, float] = {}


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=290, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["the quick brown fox jumps over the lazy dog"] * 8, trainer)
    return tok


def _hf_model(model_type: str, tie: bool, scaling: dict | None = None):
    cls_cfg, cls = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
                    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM)}[model_type]
    rope = {"rope_parameters": {"rope_type": "default", "rope_theta": THETA, **(scaling or {})}}
    cfg = cls_cfg(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                  rms_norm_eps=1e-6, initializer_range=0.1, tie_word_embeddings=tie,
                  bos_token_id=None, eos_token_id=None, **rope)
    torch.manual_seed(0)
    model = cls(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py's LlamaModel.permute."""
    head = w.shape[0] // n_head
    return w.reshape(n_head, 2, head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _llama3_factors(head_dim: int) -> np.ndarray:
    """llama.cpp's rope_freqs for llama3 scaling (convert_hf_to_gguf.py)."""
    s = LLAMA3
    freqs = 1.0 / (THETA ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    low, high = s["original_max_position_embeddings"] / s["low_freq_factor"], \
        s["original_max_position_embeddings"] / s["high_freq_factor"]
    out = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen < high:
            out.append(1.0)
        elif wavelen > low:
            out.append(s["factor"])
        else:
            smooth = (s["original_max_position_embeddings"] / wavelen - s["low_freq_factor"]) / (
                s["high_freq_factor"] - s["low_freq_factor"])
            out.append(1 / ((1 - smooth) / s["factor"] + smooth))
    return np.array(out, dtype=np.float32)


def _write_gguf(path, hf, tok: Tokenizer, arch: str, qtype, rope_freqs: bool = False):
    """Write ``hf`` as a GGUF file; returns the HF model with the weights the file holds
    (quantised then dequantised)."""
    cfg = hf.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(THETA)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    tokens = [tok.id_to_token(i) for i in range(tok.get_vocab_size())]
    w.add_token_list(tokens)
    w.add_token_types([3 if t == "<|endoftext|>" else 1 for t in tokens])
    merges = json.loads(tok.to_str())["model"]["merges"]
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    w.add_eos_token_id(tok.token_to_id("<|endoftext|>"))
    names = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, arch.upper()), cfg.num_hidden_layers)
    stored = {}
    for name, t in hf.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        data = t.numpy().astype(np.float32)
        kind = qtype if data.ndim == 2 else Q.F32
        q = gguf.quants.quantize(data, kind)
        stored[name] = torch.from_numpy(gguf.quants.dequantize(q, kind).reshape(data.shape).copy())
        if arch == "llama" and (".q_proj." in name or ".k_proj." in name):
            n = cfg.num_attention_heads if ".q_proj." in name else cfg.num_key_value_heads
            q = gguf.quants.quantize(_permute(data, n), kind)
        w.add_tensor(names.get_name(name, try_suffixes=(".weight", ".bias")), q, raw_dtype=kind)
    if rope_freqs:
        w.add_tensor(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight",
                     _llama3_factors(cfg.hidden_size // cfg.num_attention_heads))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    hf.load_state_dict(stored, strict=False)
    return hf


def _compare(hf, ours, name: str) -> None:
    x = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (ours(x) - hf(x).logits).abs().max().item()
    MEASURED[name] = diff
    assert diff <= TOL, f"{name}: {diff:.2e}"
    hf.generation_config.eos_token_id = None
    ref = hf.generate(x[:1, :5], max_new_tokens=16, do_sample=False, pad_token_id=0)[:, 5:]
    assert torch.equal(generate(ours, x[:1, :5], GenerationConfig(16, temperature=0)), ref)


CASES = {  # name: (arch, tied, tensor type, llama3 rope_freqs)
    "llama-F32-untied": ("llama", False, Q.F32, False),
    "llama-F16-tied": ("llama", True, Q.F16, False),
    "llama-Q8_0": ("llama", False, Q.Q8_0, False),
    "llama-Q4_0": ("llama", True, Q.Q4_0, False),
    "llama-Q4_1": ("llama", False, Q.Q4_1, False),
    "llama-F32-llama3-rope": ("llama", False, Q.F32, True),
    "qwen2-F32-bias": ("qwen2", False, Q.F32, False),
}


@pytest.mark.parametrize("name", CASES)
def test_gguf_import(tokenizer, tmp_path, name):
    arch, tie, qtype, llama3 = CASES[name]
    hf = _hf_model(arch, tie, LLAMA3 if llama3 else None)
    hf = _write_gguf(tmp_path / "m.gguf", hf, tokenizer, arch, qtype, rope_freqs=llama3)
    lm = load_model_dir(import_gguf(tmp_path / "m.gguf", tmp_path / "lm"))
    _compare(hf, lm.model, name)
    text = "the lazy fox <|endoftext|> jumps"
    assert lm.tokenizer.encode(text).ids == tokenizer.encode(text).ids
    assert lm.meta["imported_from"]["format"] == "gguf"
    assert lm.meta["imported_from"]["special_tokens"] == {"eos_token": "<|endoftext|>"}
    if llama3:
        assert lm.config.rope_scaling == LLAMA3


def test_unsupported_tensor_type(tokenizer, tmp_path):
    hf = _hf_model("llama", True)
    _write_gguf(tmp_path / "m.gguf", hf, tokenizer, "llama", Q.Q5_0)
    with pytest.raises(CheckpointError, match="Q5_0, which is not supported; supported: F32, F16"):
        import_gguf(tmp_path / "m.gguf", tmp_path / "lm")


def test_unsupported_architecture(tmp_path):
    w = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "falcon")
    w.add_tokenizer_model("gpt2")
    w.add_token_list(["a", "b"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ConfigError, match="'falcon' is not supported; supported: llama, qwen2"):
        import_gguf(tmp_path / "m.gguf", tmp_path / "lm")


def test_report_measured():
    for name, diff in MEASURED.items():
        print(f"gguf {name:30s} max |logit diff| = {diff:.2e}")
