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
from lmforge.modeldir import load_model_dir  # noqa: E402

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


def _hf_model(model_type: str, tie: bool, scaling: dict | None = None, width: int = 64):
    cls_cfg, cls = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
                    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM)}[model_type]
    rope = {"rope_parameters": {"rope_type": "default", "rope_theta": THETA, **(scaling or {})}}
    cfg = cls_cfg(vocab_size=VOCAB, hidden_size=width, intermediate_size=width * 3 // 2 if width < 256
                  else width, num_hidden_layers=2,
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


# --- K-quants: the gguf package dequantises them but cannot write them, so they are written
# here from the block layouts of ggml-common.h (codes and scales chosen by a rough quantiser;
# the expected weights are computed from the codes, independently of any dequantiser).
QK_K = 256


def _f16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16)


def _affine(x: np.ndarray, bits: int, sub: int, scale_bits: int):
    """Codes and per-sub-block scales/mins for y = d*sc*q - dmin*m; x (nb, 256)."""
    xs = x.reshape(len(x), QK_K // sub, sub)
    lo, hi = np.minimum(xs.min(-1), 0), xs.max(-1)
    ssub, msub = (hi - lo) / (2 ** bits - 1), -lo
    top = 2 ** scale_bits - 1
    d = _f16(np.maximum(ssub.max(-1), 1e-8) / top)
    dmin = _f16(np.maximum(msub.max(-1), 1e-8) / top)
    sc = np.clip(np.round(ssub / d.astype(np.float32)[:, None]), 1, top).astype(np.int64)
    m = np.clip(np.round(msub / dmin.astype(np.float32)[:, None]), 0, top).astype(np.int64)
    step = (d.astype(np.float32)[:, None] * sc)[..., None]
    off = (dmin.astype(np.float32)[:, None] * m)[..., None]
    q = np.clip(np.round((xs + off) / step), 0, 2 ** bits - 1).astype(np.int64)
    y = (step * q - off).reshape(len(x), QK_K)
    return q.reshape(len(x), QK_K), sc, m, d, dmin, y.astype(np.float32)


def _symmetric(x: np.ndarray, qmin: int, qmax: int, scale_top: int):
    """Codes (q - qmin >= 0) and 16-value sub-block scales for y = d*sc*q; x (nb, 256)."""
    xs = x.reshape(len(x), QK_K // 16, 16)
    ssub = np.abs(xs).max(-1) / qmax
    d = _f16(np.maximum(ssub.max(-1), 1e-8) / scale_top)
    sc = np.clip(np.round(ssub / d.astype(np.float32)[:, None]), 1, scale_top).astype(np.int64)
    step = (d.astype(np.float32)[:, None] * sc)[..., None]
    q = np.clip(np.round(xs / step), qmin, qmax).astype(np.int64)
    y = (step * q).reshape(len(x), QK_K)
    return (q - qmin).reshape(len(x), QK_K), sc, d, y.astype(np.float32)


def _scales_k4(sc: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Eight 6-bit scales and mins -> the 12 bytes get_scale_min_k4 reads; (nb, 8) -> (nb, 12)."""
    out = np.zeros((len(sc), 12), dtype=np.int64)
    out[:, 0:4] = sc[:, 0:4] | ((sc[:, 4:8] >> 4) << 6)
    out[:, 4:8] = m[:, 0:4] | ((m[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (sc[:, 4:8] & 0xF) | ((m[:, 4:8] & 0xF) << 4)
    return out


def _bytes(*parts: np.ndarray) -> np.ndarray:
    return np.concatenate([p.astype(np.uint8) if p.dtype != np.float16 else
                           p.reshape(len(p), -1).view(np.uint8) for p in parts], axis=1)


def _q4_k(x):
    q, sc, m, d, dmin, y = _affine(x, 4, 32, 6)
    c = q.reshape(len(x), 4, 2, 32)  # 64-value chunks: low nibbles, then high nibbles
    qs = (c[:, :, 0] | (c[:, :, 1] << 4)).reshape(len(x), 128)
    return _bytes(d, dmin, _scales_k4(sc, m), qs), y


def _q5_k(x):
    q, sc, m, d, dmin, y = _affine(x, 5, 32, 6)
    c = q.reshape(len(x), 4, 2, 32)
    qs = ((c[:, :, 0] & 0xF) | ((c[:, :, 1] & 0xF) << 4)).reshape(len(x), 128)
    qh = np.zeros((len(x), 32), dtype=np.int64)
    for j in range(4):
        qh |= ((c[:, j, 0] >> 4) << (2 * j)) | ((c[:, j, 1] >> 4) << (2 * j + 1))
    return _bytes(d, dmin, _scales_k4(sc, m), qh, qs), y


def _q6_k(x):
    q, sc, d, y = _symmetric(x, -32, 31, 127)
    c = q.reshape(len(x), 2, 4, 32)  # halves of 128 values, four 32-value groups each
    ql = np.concatenate([(c[:, :, 0] & 0xF) | ((c[:, :, 2] & 0xF) << 4),
                         (c[:, :, 1] & 0xF) | ((c[:, :, 3] & 0xF) << 4)], axis=2)
    qh = sum((c[:, :, g] >> 4) << (2 * g) for g in range(4))
    return _bytes(ql.reshape(len(x), 128), qh.reshape(len(x), 64), sc.astype(np.int8).view(np.uint8),
                  d), y


def _q2_k(x):
    q, sc, m, d, dmin, y = _affine(x, 2, 16, 4)
    c = q.reshape(len(x), 2, 4, 32)  # halves, 2-bit planes j, 32 bytes
    qs = sum(c[:, :, j] << (2 * j) for j in range(4)).reshape(len(x), 64)
    return _bytes(sc | (m << 4), qs, d, dmin), y


def _q3_k(x):
    q, sc, d, y = _symmetric(x, -4, 3, 31)
    s = sc + 32  # stored 6-bit, minus 32 on reading
    c = q.reshape(len(x), 2, 4, 32)
    qs = sum((c[:, :, j] & 3) << (2 * j) for j in range(4)).reshape(len(x), 64)
    hmask = sum((c[:, n, j] >> 2) << (4 * n + j) for n in range(2) for j in range(4))
    scales = np.zeros((len(x), 12), dtype=np.int64)
    scales[:, 0:4] = (s[:, 0:4] & 0xF) | ((s[:, 8:12] & 0xF) << 4)
    scales[:, 4:8] = (s[:, 4:8] & 0xF) | ((s[:, 12:16] & 0xF) << 4)
    scales[:, 8:12] = ((s[:, 0:4] >> 4) | ((s[:, 4:8] >> 4) << 2) | ((s[:, 8:12] >> 4) << 4)
                       | ((s[:, 12:16] >> 4) << 6))
    return _bytes(hmask, qs, scales, d), y


K_QUANTS = {Q.Q2_K: _q2_k, Q.Q3_K: _q3_k, Q.Q4_K: _q4_k, Q.Q5_K: _q5_k, Q.Q6_K: _q6_k}


def _quantize(data: np.ndarray, kind) -> tuple[np.ndarray, np.ndarray]:
    """(what the file stores, the weights it means) for a float32 tensor."""
    if kind in K_QUANTS:
        rows = data.reshape(-1, data.shape[-1])
        packed, y = K_QUANTS[kind](rows.reshape(-1, QK_K))
        return packed.reshape(len(rows), -1), y.reshape(data.shape)
    q = gguf.quants.quantize(data, kind)
    return q, gguf.quants.dequantize(q, kind).reshape(data.shape)


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
        q, means = _quantize(data, kind)
        stored[name] = torch.from_numpy(means.copy())
        if arch == "llama" and (".q_proj." in name or ".k_proj." in name):
            n = cfg.num_attention_heads if ".q_proj." in name else cfg.num_key_value_heads
            q = _quantize(_permute(data, n), kind)[0]  # blocks lie within rows: same rounding
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
    "llama-Q5_0": ("llama", True, Q.Q5_0, False),
    "llama-Q5_1": ("llama", False, Q.Q5_1, False),
    "llama-Q4_0": ("llama", True, Q.Q4_0, False),
    "llama-Q4_1": ("llama", False, Q.Q4_1, False),
    "llama-Q6_K": ("llama", True, Q.Q6_K, False),
    "llama-Q5_K": ("llama", False, Q.Q5_K, False),
    "llama-Q4_K": ("llama", True, Q.Q4_K, False),
    "llama-Q3_K": ("llama", False, Q.Q3_K, False),
    "llama-Q2_K": ("llama", True, Q.Q2_K, False),
    "llama-F32-llama3-rope": ("llama", False, Q.F32, True),
    "qwen2-F32-bias": ("qwen2", False, Q.F32, False),
}


@pytest.mark.parametrize("name", CASES)
def test_gguf_import(tokenizer, tmp_path, name):
    arch, tie, qtype, llama3 = CASES[name]
    width = 256 if qtype in K_QUANTS else 64  # K-quant rows are whole 256-value blocks
    hf = _hf_model(arch, tie, LLAMA3 if llama3 else None, width)
    hf = _write_gguf(tmp_path / "m.gguf", hf, tokenizer, arch, qtype, rope_freqs=llama3)
    lm = load_model_dir(import_gguf(tmp_path / "m.gguf", tmp_path / "lm"))
    _compare(hf, lm.model, name)
    text = "the lazy fox <|endoftext|> jumps"
    assert lm.tokenizer.encode(text).ids == tokenizer.encode(text).ids
    assert lm.meta.source.kind == "imported" and lm.meta.source.format == "gguf"
    assert lm.meta.source.special_tokens == {"eos_token": "<|endoftext|>"}
    if llama3:
        assert lm.config.rope_scaling == LLAMA3


def test_k_quant_blocks_match_the_layout(tmp_path):
    """Each K-quant tensor written from codes (3 rows of 2 blocks) reads back as the weights
    the codes mean: block order, row order and the bit layout of every field."""
    from lmforge.interop.gguf import _tensor

    x = np.random.default_rng(0).standard_normal((3, 2 * QK_K)).astype(np.float32)
    w = gguf.GGUFWriter(str(tmp_path / "k.gguf"), "llama")
    expected = {}
    for kind, encode in K_QUANTS.items():
        packed, y = encode(x.reshape(-1, QK_K))
        expected[kind.name] = y.reshape(x.shape)
        assert np.abs(expected[kind.name] - x).max() < 3.0  # a quantisation of x, roughly
        w.add_tensor(kind.name, packed.reshape(3, -1), raw_dtype=kind)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    for t in gguf.GGUFReader(str(tmp_path / "k.gguf")).tensors:
        got = _tensor(t, gguf)
        assert got.shape == x.shape
        np.testing.assert_allclose(got.numpy(), expected[t.name], rtol=1e-6, atol=1e-6,
                                   err_msg=t.name)


def test_unsupported_tensor_type(tokenizer, tmp_path):
    w = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    w.add_tokenizer_model("gpt2")
    w.add_token_list(["a", "b"])
    w.add_tensor("token_embd.weight", np.zeros((2, 18), dtype=np.uint8), raw_dtype=Q.IQ4_NL)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(CheckpointError, match="IQ4_NL, which is not supported; supported: F32, F16"):
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


def test_smollm_tokenizer_bos_and_generation_settings(tmp_path):
    """pre-tokenizer "smollm" splits digits one by one before GPT-2's split (as SmolLM2's
    tokenizer.json: Digits(individual_digits) + ByteLevel); add_bos_token puts BOS first; the
    stop ids (eos, eot and llama.cpp's end-of-turn names) and the chat template reach meta.json."""
    from tokenizers import processors

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|eot_id|>"]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["12 345 6789 abc123 x99"] * 20, trainer)
    tokens = [tok.id_to_token(i) for i in range(tok.get_vocab_size())]
    assert any(t.isdigit() and len(t) > 1 for t in tokens)  # digit merges exist
    template = "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}"
    w = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    for add, value in ((w.add_context_length, 64), (w.add_embedding_length, 64),
                       (w.add_block_count, 1), (w.add_feed_forward_length, 96),
                       (w.add_head_count, 4), (w.add_head_count_kv, 4)):
        add(value)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in specials else 1 for t in tokens])
    merges = json.loads(tok.to_str())["model"]["merges"]
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.add_chat_template(template)
    rng = np.random.default_rng(0)
    names = {"token_embd.weight": (len(tokens), 64), "output_norm.weight": (64,),
             "blk.0.attn_norm.weight": (64,), "blk.0.ffn_norm.weight": (64,),
             "blk.0.attn_q.weight": (64, 64), "blk.0.attn_k.weight": (64, 64),
             "blk.0.attn_v.weight": (64, 64), "blk.0.attn_output.weight": (64, 64),
             "blk.0.ffn_gate.weight": (96, 64), "blk.0.ffn_up.weight": (96, 64),
             "blk.0.ffn_down.weight": (64, 96)}
    for name, shape in names.items():
        w.add_tensor(name, rng.standard_normal(shape).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    lm = load_model_dir(import_gguf(tmp_path / "m.gguf", tmp_path / "lm"))
    ref = Tokenizer(models.BPE(tok.get_vocab(), [tuple(m.split(" ")) if isinstance(m, str) else
                                                 tuple(m) for m in merges]))
    ref.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    ref.add_special_tokens(specials)
    ref.post_processor = processors.TemplateProcessing(single="<|im_start|> $A",
                                                       special_tokens=[("<|im_start|>", 1)])
    text = "abc123 x99 12 345<|im_end|>"
    assert lm.tokenizer.encode(text).ids == ref.encode(text).ids
    pieces = lm.tokenizer.encode(text).tokens
    assert pieces[0] == "<|im_start|>" and all(sum(c.isdigit() for c in p) <= 1 for p in pieces)
    assert tok.encode(text).ids != ref.encode(text).ids[1:]  # GPT-2's split alone differs
    assert lm.tokenizer.encode(text, add_special_tokens=False).ids == ref.encode(text).ids[1:]
    gen = lm.meta.generation
    assert gen.bos_token_id == 1 and gen.add_bos_token is True
    assert gen.eos_token_ids == [2, 0, 3]  # eos, then <|endoftext|> and <|eot_id|>
    assert gen.chat_template == template
    assert gen.temperature is None  # the file has no general.sampling.* keys
