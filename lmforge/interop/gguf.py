"""GGUF (llama.cpp) checkpoints -> lmforge model directories.

Reads the ``llama`` architecture (llama.cpp also writes Mistral as ``llama``) and ``qwen2``,
with tensors stored as F32, F16, BF16, Q8_0, Q5_0, Q5_1, Q4_0, Q4_1 or the K-quants Q2_K ..
Q6_K (dequantised to float32 by the ``gguf`` package: ``pip install gguf``), and a byte-level
BPE (``tokenizer.ggml.model = "gpt2"``) or SentencePiece (``"llama"``) tokenizer, rebuilt by
:mod:`.gguf_tokenizer` with the same ids as the model's own. The end-of-generation tokens, the BOS token,
the chat template and the recommended sampling settings (``general.sampling.*``, when the file
has them) in the metadata go to meta.json's ``generation`` record, where ``lmforge generate``
and ``lmforge chat`` find them.

llama.cpp's converter permutes the rows of each head of the q and k projections of ``llama``
models (its RoPE rotates adjacent pairs of dimensions, Hugging Face's rotates i with i + D/2);
that permutation is undone here. The metadata becomes an HF-style config and the tensors get
their HF names, and the Llama family (``lmforge.interop.hf.llama``) does the rest.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..blocks import rope_inv_freq
from ..errors import CheckpointError, ConfigError
from ..modeldir.meta import Generation, Source
from .gguf_checks import check_architecture, check_hparams, check_token_list, one_error
from .gguf_scan import scan_gguf
from .gguf_tokenizer import gguf_tokenizer  # re-exported: the tokenizer of a GGUF file
from .huggingface import write_imported

ARCHITECTURES = ("llama", "qwen2")
TENSOR_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q5_0", "Q5_1", "Q4_0", "Q4_1",
                "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")
EOG_TOKENS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
              "<|eom_id|>", "<EOT>", "_<EOT>", "<\uff5cend\u2581of\u2581sentence\uff5c>")
"""Tokens llama.cpp also ends generation at when the vocabulary has them (llama-vocab.cpp)."""
_GLOBAL = {"token_embd.weight": "model.embed_tokens.weight",
           "output_norm.weight": "model.norm.weight", "output.weight": "lm_head.weight"}
_BLOCK = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
          "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
          "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
          "ffn_down": "mlp.down_proj"}
_REQUIRED = object()


def _gguf():
    try:  # an optional dependency: only GGUF import needs it
        import gguf
    except ImportError:
        raise ConfigError("GGUF import needs the gguf package: pip install gguf") from None
    return gguf


def hf_name(name: str) -> str:
    """GGUF tensor name -> HF Llama name (unknown names are kept; import refuses them)."""
    if name in _GLOBAL:
        return _GLOBAL[name]
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", name)
    if m and m[2] in _BLOCK:
        return f"model.layers.{m[1]}.{_BLOCK[m[2]]}.{m[3]}"
    return name


def unpermute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's row order within each head of a q/k projection: its rows (2j, 2j+1)
    are HF's rows (j, j + D/2).  weight (H*D, C) or bias (H*D,) -> same shape"""
    rows, rest = w.shape[0], w.shape[1:]
    w = w.reshape(n_head, rows // n_head // 2, 2, *rest)  # (H, D/2, 2, ...)
    return w.transpose(1, 2).reshape(rows, *rest)  # (H, 2, D/2, ...) -> (H*D, ...)


def _check_type(t, gguf) -> None:
    kind = gguf.GGMLQuantizationType(t.tensor_type).name
    if kind not in TENSOR_TYPES:
        raise CheckpointError(f"tensor {t.name} is stored as {kind}, which is not supported; "
                              f"supported: {', '.join(TENSOR_TYPES)}")


def _tensor(t, gguf) -> torch.Tensor:
    """One GGUF tensor as float32 torch, in PyTorch's dimension order."""
    _check_type(t, gguf)
    shape = tuple(reversed([int(d) for d in t.shape]))  # GGUF lists the innermost dimension first
    data = gguf.quants.dequantize(t.data, t.tensor_type)
    return torch.from_numpy(np.array(data, dtype=np.float32).reshape(shape))


def _llama3_scaling(factors: torch.Tensor, head_dim: int, theta: float,
                    original: int | None) -> dict:
    """llama.cpp stores Llama 3.1 RoPE scaling as per-frequency divisors (rope_freqs, (D/2,));
    recover the llama3 parameters that give them, with Meta's low/high frequency factors 1
    and 4: ``factor`` is the largest divisor, and a divisor between 1 and ``factor`` (the
    smoothed band) gives the original context length when the metadata lacks it."""
    inv = rope_inv_freq(head_dim, theta)  # (D/2,)
    factor, low, high = float(factors.max()), 1.0, 4.0
    if original is None:
        original = 8192  # Llama 3.1's; any length fits when no divisor is in the smoothed band
        for wavelen, f in zip((2 * math.pi / inv).tolist(), factors.tolist()):
            if 1.0 < f < factor:
                smooth = (1 / f - 1 / factor) / (1 - 1 / factor)
                original = round(wavelen * (smooth * (high - low) + low))
                break
    scaling = {"rope_type": "llama3", "factor": factor, "low_freq_factor": low,
               "high_freq_factor": high, "original_max_position_embeddings": original}
    if not torch.allclose(rope_inv_freq(head_dim, theta, scaling), inv / factors, rtol=1e-5):
        raise ConfigError("the GGUF rope_freqs tensor is not llama3 RoPE scaling with low/high "
                          "frequency factors 1 and 4; not supported")
    return scaling


def architecture(meta: dict[str, Any]) -> str:
    arch = meta.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise ConfigError(f"GGUF architecture {arch!r} is not supported; supported: "
                          f"{', '.join(ARCHITECTURES)}")
    return arch


def hf_config(meta: dict[str, Any], tensors: dict[str, torch.Tensor],
              rope_freqs: torch.Tensor | None) -> dict:
    """GGUF metadata -> an HF-style config dict for the Llama family."""
    arch = architecture(meta)

    def get(key: str, default: Any = _REQUIRED) -> Any:
        value = meta.get(f"{arch}.{key}", default)
        if value is _REQUIRED:
            raise CheckpointError(f"the GGUF metadata has no {arch}.{key}")
        return value

    heads, d = int(get("attention.head_count")), int(get("embedding_length"))
    head_dim = int(get("attention.key_length", d // heads))
    hf = {"model_type": arch, "vocab_size": tensors["model.embed_tokens.weight"].shape[0],
          "hidden_size": d, "intermediate_size": get("feed_forward_length"),
          "num_hidden_layers": get("block_count"), "num_attention_heads": heads,
          "num_key_value_heads": get("attention.head_count_kv", heads), "head_dim": head_dim,
          "max_position_embeddings": get("context_length"),
          "rms_norm_eps": get("attention.layer_norm_rms_epsilon", 1e-5),
          "rope_theta": float(get("rope.freq_base", 10000.0)),
          "partial_rotary_factor": get("rope.dimension_count", head_dim) / head_dim,
          "attention_bias": "model.layers.0.self_attn.q_proj.bias" in tensors,
          "tie_word_embeddings": "lm_head.weight" not in tensors}
    if isinstance(hf["num_key_value_heads"], list):
        raise ConfigError("GGUF files with a different number of kv heads per layer are not "
                          "supported")
    kind = get("rope.scaling.type", "none")
    original = get("rope.scaling.original_context_length", None)
    if rope_freqs is not None:
        hf["rope_scaling"] = _llama3_scaling(rope_freqs, head_dim, hf["rope_theta"], original)
    elif kind == "linear":
        hf["rope_scaling"] = {"rope_type": "linear", "factor": get("rope.scaling.factor")}
    elif kind != "none":
        hf["rope_scaling"] = {"rope_type": kind}  # refused by the family with what is supported
    for key in ("bos_token_id", "eos_token_id", "padding_token_id"):
        if (value := meta.get(f"tokenizer.ggml.{key}")) is not None:
            hf[key.replace("padding", "pad")] = value
    return hf


SAMPLING_KEYS = {"temperature": ("temp", float), "top_k": ("top_k", int),
                 "top_p": ("top_p", float), "repetition_penalty": ("penalty_repeat", float)}
"""meta.json's ``generation`` field -> (GGUF ``general.sampling.<key>``, type)."""


def sampling_defaults(meta: dict[str, Any]) -> dict[str, Any]:
    """The recommended sampling settings a GGUF file records (``general.sampling.*``)."""
    out = {}
    for field, (key, kind) in SAMPLING_KEYS.items():
        value = meta.get(f"general.sampling.{key}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[field] = kind(value)
    return out


def generation_settings(meta: dict[str, Any]) -> Generation:
    """meta.json's ``generation`` record: the BOS id, the ids that end generation (the EOS,
    EOT and EOM ids, and the end-of-turn tokens llama.cpp also stops at), the chat template
    and the sampling defaults (:func:`sampling_defaults`)."""
    tokens: list[str] = meta.get("tokenizer.ggml.tokens") or []
    get = lambda key: (v if isinstance(v := meta.get(f"tokenizer.ggml.{key}"), int)  # noqa: E731
                       and 0 <= v < len(tokens) else None)
    stops = [get(k) for k in ("eos_token_id", "eot_token_id", "eom_token_id")]
    stops += [i for i, t in enumerate(tokens) if t in EOG_TOKENS]
    template = meta.get("tokenizer.chat_template")
    return Generation(bos_token_id=get("bos_token_id"),
                      eos_token_ids=list(dict.fromkeys(i for i in stops if i is not None)),
                      pad_token_id=get("padding_token_id"),
                      add_bos_token=bool(meta.get("tokenizer.ggml.add_bos_token", False)),
                      chat_template=template if isinstance(template, str) else None,
                      **sampling_defaults(meta))


@one_error  # a malformed file gives one CheckpointError, whatever library trips on it
def import_gguf(src: str | Path, out_dir: str | Path, dtype: str | None = None) -> Path:
    """Convert a GGUF file into an lmforge model directory (float32 weights unless ``dtype``).
    The header, metadata and tensor infos are read and bounded by :mod:`.gguf_scan`, the
    metadata checked by :mod:`.gguf_checks` before anything is dequantised or built."""
    gguf, path = _gguf(), Path(src)
    if not path.is_file():
        raise CheckpointError(f"GGUF file {str(path)!r} does not exist")
    reader = scan_gguf(path)  # every count, length and offset checked against the file
    meta = reader.metadata
    check_architecture(meta, path, ARCHITECTURES)  # refuse before dequantising anything
    check_token_list(meta, path)
    tokenizer = gguf_tokenizer(meta)
    for t in reader.tensors:  # refuse an unsupported type before dequantising the others
        _check_type(t, gguf)
    check_hparams(meta, reader.tensors, path)  # sizes against caps before any allocation
    tensors = {hf_name(t.name): _tensor(t, gguf) for t in reader.tensors}
    hf = hf_config(meta, tensors, tensors.pop("rope_freqs.weight", None))
    if hf["model_type"] == "llama":  # llama.cpp's converter permuted q and k for its RoPE
        for name in list(tensors):
            if ".self_attn.q_proj." in name or ".self_attn.k_proj." in name:
                n = hf["num_key_value_heads"] if ".k_proj." in name else hf["num_attention_heads"]
                tensors[name] = unpermute(tensors[name], n).contiguous()
    types = sorted({gguf.GGMLQuantizationType(t.tensor_type).name for t in reader.tensors})
    tokens = meta["tokenizer.ggml.tokens"]
    ids = {f"{k}_token": meta.get(f"tokenizer.ggml.{key}_token_id")
           for k, key in (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"))}
    specials = {k: tokens[i] for k, i in ids.items() if isinstance(i, int) and 0 <= i < len(tokens)}
    name = meta.get("general.name")
    source = Source(kind="imported", format="gguf", path=str(path.resolve()), tensor_types=types,
                    special_tokens=specials, name=name if isinstance(name, str) else None)
    return write_imported(hf, tensors, tokenizer, out_dir, dtype, source,
                          generation=generation_settings(meta))
