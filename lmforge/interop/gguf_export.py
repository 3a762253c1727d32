"""lmforge model directories -> GGUF files (llama.cpp's format), the reverse of :mod:`.gguf`.

    export_gguf(DIR, FILE, quant)   quant: f32, f16, q8_0 or q4_0

Three architectures, as llama.cpp and transformers' GGUF loader read them:

- ``llama``: RMSNorm + SwiGLU + RoPE decoders without biases (Llama; Mistral without a sliding
  window), grouped-query attention, tied or untied output. The rows of each head of the q and
  k projections are permuted into llama.cpp's RoPE order (adjacent pairs; the inverse of
  :func:`.gguf.unpermute`).
- ``qwen2``: the same network with q/k/v biases and none on o_proj (no permutation).
- ``gpt2``: LayerNorm + tanh-GELU + learned positions with biases, fused ``attn_qkv``.

The tensors are renamed from the Hugging Face names of the family (``lmforge.interop.hf``)
with the ``gguf`` package's own name map, the one transformers' loader inverts. ``f16`` stores
matrices as F16 and norms/biases as F32 (llama.cpp's convention); ``q8_0``/``q4_0`` quantise
every matrix whose rows are a whole number of 32-value blocks (the rest as F16) with
``gguf.quants``, norms and biases as F32.

The tokenizer must be a byte-level BPE whose pre-tokenizer split is one llama.cpp names
(``tokenizer.ggml.pre``, :data:`.gguf_tokenizer.PRE_SPLITS`); its special tokens become
control tokens, other added tokens user-defined ones, and meta.json's ``generation`` record
gives the BOS/EOS/pad ids, ``add_bos_token`` and the chat template.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, TokenizerError
from ..files.atomic import atomic_write
from ..modeldir.directory import (
    check_tensors,
    load_tokenizer_file,
    read_config,
    read_meta,
    read_weights,
)
from ..modeldir.meta import Generation
from ..models import ModelConfig
from ..tokenizers import eos_token_id
from .gguf import _gguf
from .gguf_tokenizer import _GPT2, CONTROL, IGNORE_MERGES, PRE_SPLITS, USER_DEFINED
from .hf import FAMILIES, Family
from .hf.files import BYTE_ALPHABET

QUANTS = ("f32", "f16", "q8_0", "q4_0")
PRE_NAMES = {"gpt2": "gpt-2", "llama3": "llama-bpe", "qwen2": "qwen2", "tekken": "tekken",
             "gpt-4o": "gpt-4o", "starcoder": "starcoder", "falcon": "falcon",
             "deepseek-llm": "deepseek-llm", "deepseek-coder": "deepseek-coder",
             "deepseek-v3": "deepseek-v3", "bloom": "bloom", "viking": "viking",
             "chameleon": "chameleon"}
"""Split kind -> the ``tokenizer.ggml.pre`` name written for it."""
NORMAL, UNUSED = 1, 5  # tokenizer.ggml.token_type values
_CONV1D = (".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight")


def _family(cfg: ModelConfig, prefer: str | None) -> Family:
    """The HF family (llama or gpt2) whose tensor names and layout the export starts from."""
    order = sorted((FAMILIES["llama"], FAMILIES["gpt2"]), key=lambda f: f.name != prefer)
    found = {f.name: f.export_problems(cfg) for f in order}
    for f in order:
        if not found[f.name]:
            return f
    why = "; ".join(f"for {name}: {', '.join(p)}" for name, p in found.items())
    raise ConfigError(f"this model cannot be exported as GGUF (llama, qwen2 or gpt2); these "
                      f"fields prevent it, {why}")


def gguf_architecture(cfg: ModelConfig, tensors: dict[str, torch.Tensor], prefer: str | None) -> str:
    """``llama``, ``qwen2`` or ``gpt2`` for ``cfg``; anything else refused with one line."""
    if cfg.arch != "decoder":
        raise ConfigError(f"GGUF export supports decoder language models; this model has "
                          f"arch={cfg.arch!r}")
    family = _family(cfg, prefer)
    if family.name == "gpt2":
        if cfg.activation != "gelu_tanh" or cfg.ff_dim != 4 * cfg.d_model:
            raise ConfigError(f"GGUF gpt2 needs activation='gelu_tanh' and d_ff=4*d_model; this "
                              f"model has activation={cfg.activation!r}, d_ff={cfg.ff_dim}")
        return "gpt2"
    why = [f"attention_window={cfg.attention_window} (GGUF llama has no sliding window)"
           if cfg.attention_window else None,
           f"rope_scaling={cfg.rope_scaling} (transformers' GGUF loader reads no RoPE scaling)"
           if cfg.rope_scaling else None, "ff_bias=True" if cfg.use_ff_bias else None]
    if cfg.use_attn_bias:
        o_bias = [tensors[f"backbone.layers.{i}.attn.o_proj.bias"] for i in range(cfg.n_layer)]
        if any(bool(b.any()) for b in o_bias) or cfg.dim_head * cfg.n_head != cfg.d_model:
            why.append("attention biases with a non-zero o_proj bias or head_dim*n_head != "
                       "d_model (GGUF qwen2 has q/k/v biases only)")
    why = [w for w in why if w]
    if why:
        raise ConfigError(f"this model cannot be exported as GGUF: {'; '.join(why)}")
    return "qwen2" if cfg.use_attn_bias else "llama"


def permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """HF's row order within each head of a q/k projection -> llama.cpp's: HF rows (j, j + D/2)
    become rows (2j, 2j+1) (the inverse of :func:`.gguf.unpermute`).
    weight (H*D, C) or bias (H*D,) -> same shape"""
    rows, rest = w.shape[0], w.shape[1:]
    w = w.reshape(n_head, 2, rows // n_head // 2, *rest)  # (H, 2, D/2, ...)
    return w.transpose(1, 2).reshape(rows, *rest)  # (H, D/2, 2, ...) -> (H*D, ...)


def gguf_tensors(cfg: ModelConfig, tensors: dict[str, torch.Tensor], arch: str,
                 prefer: str | None = None) -> dict[str, torch.Tensor]:
    """lmforge state dict -> GGUF-named float32 tensors in PyTorch's dimension order."""
    gguf = _gguf()
    family = _family(cfg, prefer)
    hf = family.state_to_hf(tensors, cfg)
    kind = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2,
            "gpt2": gguf.MODEL_ARCH.GPT2}[arch]
    names = gguf.get_tensor_name_map(kind, cfg.n_layer)
    out = {}
    for name, t in hf.items():
        base, _, suffix = name.rpartition(".")
        new = names.get_name(base)
        if new is None:
            raise ConfigError(f"GGUF export: no GGUF name for tensor {name}")
        t = t.detach().float()
        if arch == "gpt2" and name.endswith(_CONV1D):
            t = t.t()  # Conv1D (in, out) -> Linear (out, in), as llama.cpp stores it
        if arch == "llama" and (".q_proj." in name or ".k_proj." in name):
            t = permute(t, cfg.n_head if ".q_proj." in name else (cfg.n_kv_head or cfg.n_head))
        out[f"{new}.{suffix}"] = t.contiguous()
    return out


def tensor_type(name: str, t: torch.Tensor, quant: str):
    """The GGML type a tensor is stored as under ``quant`` (see the module docstring)."""
    q = _gguf().GGMLQuantizationType
    if t.dim() < 2 or quant == "f32" or name.startswith("position_embd"):
        return q.F32
    if quant == "f16" or t.shape[-1] % 32:
        return q.F16
    return {"q8_0": q.Q8_0, "q4_0": q.Q4_0}[quant]


def stored_data(name: str, t: torch.Tensor, quant: str) -> tuple[np.ndarray, object]:
    """(the array GGUFWriter writes, its GGML type) for one tensor."""
    gguf, kind = _gguf(), tensor_type(name, t, quant)
    return gguf.quants.quantize(t.numpy(), kind), kind


def dequantised(name: str, t: torch.Tensor, quant: str) -> torch.Tensor:
    """What a reader gets back for ``t`` stored under ``quant`` (float32, same shape)."""
    data, kind = stored_data(name, t, quant)
    back = _gguf().quants.dequantize(data, kind)
    return torch.from_numpy(np.array(back, dtype=np.float32).reshape(t.shape))


def _pre_type(pre: dict | None) -> str:
    """Our tokenizer.json pre-tokenizer -> the split kind of :data:`PRE_SPLITS`."""
    steps = (pre or {}).get("pretokenizers") if (pre or {}).get("type") == "Sequence" else [pre]
    steps = [s for s in steps or [] if s]
    *splits, last = steps or [{}]
    if last.get("type") != "ByteLevel" or last.get("add_prefix_space"):
        raise TokenizerError("GGUF export needs a byte-level BPE tokenizer (a ByteLevel "
                             "pre-tokenizer without add_prefix_space, last)")
    regexes = []
    for s in splits:
        pattern = (s.get("pattern") or {}).get("Regex")
        if s.get("type") != "Split" or pattern is None or s.get("behavior") != "Isolated" \
                or s.get("invert"):
            raise TokenizerError(f"GGUF export: pre-tokenizer step {s.get('type')} is not a "
                                 "split llama.cpp names (tokenizer.ggml.pre)")
        regexes.append(pattern)
    regexes += [_GPT2] if last.get("use_regex", True) else []  # ByteLevel's own split, last
    for kind, split in PRE_SPLITS.items():
        if tuple(regexes) == split:
            return kind
    raise TokenizerError("GGUF export: the tokenizer's pre-tokenizer split matches no "
                         "tokenizer.ggml.pre type llama.cpp knows; it cannot be expressed")


def _add_ends(tokenizer) -> tuple[bool, bool]:
    """Whether the tokenizer puts a token before / after each text by itself."""
    plain = tokenizer.encode("x", add_special_tokens=False).ids
    full = tokenizer.encode("x").ids
    start = len(full) > len(plain) and full[-len(plain):] == plain
    end = len(full) > len(plain) and full[:len(plain)] == plain
    return start, end


def vocabulary(tokenizer, vocab_size: int) -> dict:
    """tokenizer.ggml.* lists (tokens, token types, merges) and the pre type of a byte-level
    BPE; the list is padded with unused ``[PADn]`` tokens to the model's vocabulary."""
    spec = json.loads(tokenizer.to_str())
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or spec.get("normalizer") or model.get("byte_fallback") \
            or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise TokenizerError("GGUF export needs a plain byte-level BPE tokenizer (no normalizer, "
                             "byte fallback or subword affixes); this tokenizer.json is not one")
    kind = _pre_type(spec.get("pre_tokenizer"))
    if bool(model.get("ignore_merges")) != (kind in IGNORE_MERGES):
        raise TokenizerError(f"GGUF export: ignore_merges={model.get('ignore_merges')} does not "
                             f"match what llama.cpp does for the {PRE_NAMES[kind]} split")
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    n = len(vocab)
    if sorted(vocab.values()) != list(range(n)) or n > vocab_size:
        raise TokenizerError(f"GGUF export: the tokenizer's ids must be 0..{n - 1} with "
                             f"{n} <= the model's vocab_size {vocab_size}")
    tokens = [""] * n
    for t, i in vocab.items():
        tokens[i] = t
    types = [NORMAL] * n
    for a in spec.get("added_tokens") or []:
        types[a["id"]] = CONTROL if a.get("special") else USER_DEFINED
        if a.get("special") and not set(a["content"]) <= BYTE_ALPHABET:
            raise TokenizerError(f"GGUF export: special token {a['content']!r} is spelled "
                                 "outside the byte alphabet; llama.cpp readers would drop it")
    pads = [f"[PAD{i}]" for i in range(n, vocab_size)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    return {"tokens": tokens + pads, "types": types + [UNUSED] * len(pads), "merges": merges,
            "pre": PRE_NAMES[kind]}


def _token_metadata(writer, tokenizer, vocab_size: int, gen: Generation | None) -> None:
    """The tokenizer.* keys: vocabulary, special ids, add_bos/add_eos, chat template."""
    voc = vocabulary(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(voc["pre"])
    writer.add_token_list(voc["tokens"])
    writer.add_token_types(voc["types"])
    writer.add_token_merges(voc["merges"])
    gen, n = gen or Generation(), tokenizer.get_vocab_size(with_added_tokens=True)
    eos = next((i for i in (gen.eos_token_ids or []) + [eos_token_id(tokenizer)]
                if i is not None and 0 <= i < n), None)
    start, end = _add_ends(tokenizer)
    bos = tokenizer.encode("x").ids[0] if start else gen.bos_token_id  # what it really adds
    for add, value in ((writer.add_bos_token_id, bos), (writer.add_eos_token_id, eos),
                       (writer.add_pad_token_id, gen.pad_token_id)):
        if value is not None and 0 <= value < n:  # ids outside the vocabulary left out
            add(int(value))
    writer.add_add_bos_token(bool(start))
    writer.add_add_eos_token(bool(end))
    if gen.chat_template:
        writer.add_chat_template(gen.chat_template)


def _hparams(writer, cfg: ModelConfig, arch: str) -> None:
    writer.add_context_length(cfg.context_length)
    writer.add_embedding_length(cfg.d_model)
    writer.add_block_count(cfg.n_layer)
    writer.add_feed_forward_length(cfg.ff_dim)
    writer.add_head_count(cfg.n_head)
    if arch == "gpt2":
        writer.add_layer_norm_eps(cfg.norm_eps)
        return
    writer.add_head_count_kv(cfg.n_kv_head or cfg.n_head)
    writer.add_layer_norm_rms_eps(cfg.norm_eps)
    writer.add_rope_freq_base(float(cfg.rope_theta))
    writer.add_rope_dimension_count(cfg.dim_head)
    writer.add_key_length(cfg.dim_head)
    writer.add_value_length(cfg.dim_head)
    writer.add_vocab_size(cfg.vocab_size)


FILE_TYPES = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "q8_0": "MOSTLY_Q8_0", "q4_0": "MOSTLY_Q4_0"}


def export_gguf(model_dir: str | Path, out_file: str | Path, quant: str = "f16") -> dict:
    """Write lmforge model directory ``model_dir`` as the GGUF file ``out_file`` (atomically:
    a temporary file renamed into place). Returns a summary: architecture, pre-tokenizer type,
    tensor type counts."""
    if quant not in QUANTS:
        raise ConfigError(f"--quant {quant!r} is not supported; choose {', '.join(QUANTS)}")
    gguf, path = _gguf(), Path(model_dir)
    cfg, meta = read_config(path), read_meta(path)
    tokenizer, tensors = load_tokenizer_file(path), read_weights(path)
    check_tensors(cfg, tensors, str(path))
    source = meta.imported_source()
    prefer = source.family if source else None
    arch = gguf_architecture(cfg, tensors, prefer)
    named = gguf_tensors(cfg, tensors, arch, prefer)
    counts: dict[str, int] = {}

    def write(tmp: Path) -> None:
        writer = gguf.GGUFWriter(tmp, arch)
        writer.add_name(source.name if source and source.name else path.resolve().name)
        writer.add_file_type(gguf.LlamaFileType[FILE_TYPES[quant]])
        _hparams(writer, cfg, arch)
        _token_metadata(writer, tokenizer, cfg.vocab_size, meta.generation)
        for tname, t in named.items():
            data, kind = stored_data(tname, t, quant)
            counts[kind.name] = counts.get(kind.name, 0) + 1
            writer.add_tensor(tname, data, raw_dtype=kind)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    atomic_write(out_file, write)
    return {"architecture": arch, "tensor_types": counts,
            "pre": vocabulary(tokenizer, cfg.vocab_size)["pre"]}
