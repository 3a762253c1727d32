"""Hugging Face Llama (``LlamaForCausalLM``) <-> lmforge, also reading Mistral, Qwen2 and Qwen3
checkpoints, which are the same network:

    RMSNorm pre-norm blocks, SwiGLU feed-forward (gate/up/down), RoPE in the "rotate half"
    layout, grouped-query attention (num_key_value_heads), tied or untied output matrix.

Per model type: Llama may have ``attention_bias`` (q/k/v/o) and ``mlp_bias``; Mistral has no
biases; Qwen2 has q/k/v biases but none on o_proj (imported as a zero o_proj bias); Qwen3 adds
an RMSNorm on each head's queries and keys before RoPE (``qk_norm``; it exports as
``Qwen3ForCausalLM``, the only one of the four that has it). A sliding
attention window on every layer (Mistral; Qwen2 with use_sliding_window and all layers sliding)
is imported exactly: ``attention = "sliding_window"``, ``attention_window`` = the window, and
the real context length; such a model exports as ``MistralForCausalLM`` with its
``sliding_window``. A window on only some layers (Qwen2's max_window_layers) equals full
attention for sequences no longer than the window, so there context_length is capped at it.
The tensor names are the same as lmforge's up to renaming, so one table serves both directions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ...blocks import ROPE_SCALING
from ...errors import ConfigError
from ...models import ModelConfig
from .base import (PLAIN_DECODER, Family, Pair, Tensors, hf_option, lm_head_from_hf, lm_head_to_hf,
                   need, problems, rename)

MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
DEFAULT_CONTEXT = {"llama": 2048, "mistral": 131072, "qwen2": 32768, "qwen3": 40960}
"""transformers' default max_position_embeddings (a config.json may leave it out)."""
ROPE_TYPES = ("default", *ROPE_SCALING)
_ATTN = (("self_attn.q_proj", "attn.q_proj"), ("self_attn.k_proj", "attn.k_proj"),
         ("self_attn.v_proj", "attn.v_proj"), ("self_attn.o_proj", "attn.o_proj"))
_MLP = (("mlp.gate_proj", "ff.gate_proj"), ("mlp.up_proj", "ff.up_proj"),
        ("mlp.down_proj", "ff.down_proj"))
_QK_NORMS = (("self_attn.q_norm", "attn.q_norm"), ("self_attn.k_norm", "attn.k_norm"))
_NORMS = (("input_layernorm", "norm1"), ("post_attention_layernorm", "norm2"))


def _rope(hf: dict, family: str) -> tuple[float, dict[str, Any] | None]:
    """(rope_theta, lmforge rope_scaling) from either transformers 5's ``rope_parameters`` or
    the older ``rope_theta`` + ``rope_scaling``."""
    params = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    theta = float(params.pop("rope_theta", hf.get("rope_theta", 10000.0)))
    kind = params.get("rope_type", params.get("type", "default"))
    if kind not in ROPE_TYPES:
        raise ConfigError(f"Hugging Face config rope type {kind!r} is not supported for {family} "
                          f"models; supported: {', '.join(ROPE_TYPES)}")
    partial = params.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
    if partial != 1.0:
        raise ConfigError(f"Hugging Face config partial_rotary_factor={partial!r} is not "
                          f"supported for {family} models; supported: 1.0 (RoPE on all dimensions)")
    if kind == "default":
        return theta, None
    if kind == "llama3":  # transformers falls back to max_position_embeddings
        params.setdefault("original_max_position_embeddings", hf.get("max_position_embeddings"))
    return theta, {"rope_type": kind, **{k: params[k] for k in ROPE_SCALING[kind] if k in params}}


def _sliding_window(hf: dict, model_type: str) -> tuple[int | None, bool]:
    """(window, whether every layer slides); (None, False) = full attention everywhere."""
    qwen = model_type in ("qwen2", "qwen3")
    if model_type == "llama" or (qwen and not hf.get("use_sliding_window")):
        return None, False
    window = hf.get("sliding_window", 4096)  # transformers' default for both
    if not window:
        return None, False
    types = hf.get("layer_types")
    if types is None and qwen:  # as transformers' Qwen2Config / Qwen3Config derive them
        first = hf.get("max_window_layers", 28)
        types = ["sliding_attention" if i >= first else "full_attention"
                 for i in range(hf.get("num_hidden_layers", 0))]
    sliding = [t == "sliding_attention" for t in types or ["sliding_attention"]]
    return (window, all(sliding)) if any(sliding) else (None, False)


def config_from_hf(hf: dict) -> ModelConfig:
    """A ``transformers`` Llama/Mistral/Qwen2/Qwen3 config (as a dict) -> ModelConfig."""
    mt = hf.get("model_type", "llama")
    hf_option(hf, "hidden_act", "silu", ("silu",), mt)  # SwiGLU is the silu-gated MLP
    theta, scaling = _rope(hf, mt)
    d, heads = need(hf, "hidden_size", mt), need(hf, "num_attention_heads", mt)
    head_dim = hf.get("head_dim") or d // heads
    kv = hf.get("num_key_value_heads") or heads
    context = hf.get("max_position_embeddings") or DEFAULT_CONTEXT[mt]
    window, every_layer = _sliding_window(hf, mt)
    if window and not every_layer:  # some layers slide: exact up to the window only
        context = min(context, window)
    attention = dict(attention="sliding_window", attention_window=window) if every_layer else {}
    attn_bias, ff_bias = {"mistral": (False, False), "qwen2": (True, False),
                          "qwen3": (hf.get("attention_bias", False), False)}.get(
        mt, (hf.get("attention_bias", False), hf.get("mlp_bias", False)))
    return ModelConfig(
        vocab_size=need(hf, "vocab_size", mt), context_length=context, d_model=d,
        n_layer=need(hf, "num_hidden_layers", mt), n_head=heads,
        n_kv_head=None if kv == heads else kv,
        head_dim=None if head_dim * heads == d else head_dim,
        d_ff=need(hf, "intermediate_size", mt), activation="swiglu", norm="rmsnorm",
        norm_eps=hf.get("rms_norm_eps", 1e-6), prenorm=True, positional="rope", rope_theta=theta,
        rope_scaling=scaling, bias=False, attn_bias=True if attn_bias else None,
        ff_bias=True if ff_bias else None, tie_embeddings=hf.get("tie_word_embeddings", False),
        qk_norm=mt == "qwen3", **attention)


def _variant(cfg: ModelConfig) -> dict:
    """The config.json entries naming the model: Qwen3 with qk-norm (its window on every
    layer), Mistral with a sliding window (Llama has none), else Llama's (none: the default)."""
    window = cfg.attention_window
    if cfg.qk_norm:
        slides = {"use_sliding_window": True, "sliding_window": window, "max_window_layers": 0,
                  "layer_types": ["sliding_attention"] * cfg.n_layer} if window else {}
        return {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
                "use_sliding_window": False, **slides}
    if window:
        return {"architectures": ["MistralForCausalLM"], "model_type": "mistral",
                "sliding_window": window}
    return {}


def config_to_hf(cfg: ModelConfig) -> dict:
    """Llama's config.json entries; Qwen3's with qk-norm, Mistral's with a sliding window."""
    return _variant(cfg) | {"vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model,
            "intermediate_size": cfg.ff_dim, "num_hidden_layers": cfg.n_layer,
            "num_attention_heads": cfg.n_head, "num_key_value_heads": cfg.n_kv_head or cfg.n_head,
            "head_dim": cfg.dim_head, "hidden_act": "silu",
            "max_position_embeddings": cfg.context_length, "rms_norm_eps": cfg.norm_eps,
            "rope_theta": cfg.rope_theta,
            "rope_scaling": dict(cfg.rope_scaling) if cfg.rope_scaling else None,
            "attention_bias": cfg.use_attn_bias, "mlp_bias": cfg.use_ff_bias,
            "attention_dropout": cfg.dropout, "tie_word_embeddings": cfg.tie_embeddings}


def export_problems(cfg: ModelConfig) -> list[str]:
    out = problems(cfg, **PLAIN_DECODER, positional=("rope",), norm=("rmsnorm",),
                   activation=("swiglu",), scale_embeddings=(False,))
    if cfg.d_model % cfg.n_head:
        out.append(f"d_model={cfg.d_model} (transformers needs a multiple of n_head={cfg.n_head})")
    if cfg.qk_norm and cfg.use_ff_bias:
        out.append("qk_norm with ff_bias (qk-norm exports as Qwen3, whose MLP has no biases)")
    elif cfg.attention_window and not cfg.qk_norm and (cfg.use_attn_bias or cfg.use_ff_bias):
        out.append(f"attention_window={cfg.attention_window} with biases (a sliding window "
                   "exports as Mistral, which has no biases)")
    return out


def _pairs(cfg: ModelConfig) -> list[Pair]:
    """(HF name, lmforge name, transposed) for every tensor but the output matrix."""
    pairs: list[Pair] = [("model.embed_tokens.weight", "backbone.embed.weight", False),
                         ("model.norm.weight", "backbone.norm.weight", False)]
    for i in range(cfg.n_layer):
        hf, ours = f"model.layers.{i}.", f"backbone.layers.{i}."
        modules = [(m, "weight") for m in _ATTN + _MLP + _NORMS
                   + (_QK_NORMS if cfg.qk_norm else ())]
        modules += [(m, "bias") for m in _ATTN] if cfg.use_attn_bias else []
        modules += [(m, "bias") for m in _MLP] if cfg.use_ff_bias else []
        pairs += [(f"{hf}{a}.{p}", f"{ours}{b}.{p}", False) for (a, b), p in modules]
    return pairs


def state_dict_from_hf(sd: Mapping[str, torch.Tensor], cfg: ModelConfig) -> Tensors:
    """LlamaForCausalLM (or Mistral/Qwen2/Qwen3) state dict -> CausalLM's."""
    src = dict(sd)
    if cfg.use_attn_bias:  # Qwen2: q/k/v biases but no o_proj bias; lmforge's is zero
        for i in range(cfg.n_layer):
            o = f"model.layers.{i}.self_attn.o_proj."
            if o + "weight" in src:
                src.setdefault(o + "bias", src[o + "weight"].new_zeros(cfg.d_model))  # (C,)
    out = rename(src, _pairs(cfg), to_hf=False)
    out["lm_head.weight"] = lm_head_from_hf(src, cfg, "model.embed_tokens.weight")
    return out


def state_dict_to_hf(sd: Mapping[str, torch.Tensor], cfg: ModelConfig) -> Tensors:
    """CausalLM state dict -> LlamaForCausalLM's (HF names)."""
    return rename(sd, _pairs(cfg), to_hf=True) | lm_head_to_hf(sd, cfg)


FAMILY = Family(name="llama", model_types=MODEL_TYPES, architecture="LlamaForCausalLM", prefix="",
                config_from_hf=config_from_hf, config_to_hf=config_to_hf,
                state_from_hf=state_dict_from_hf, state_to_hf=state_dict_to_hf,
                export_problems=export_problems)
