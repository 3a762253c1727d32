"""Hugging Face Gemma (1) (``GemmaForCausalLM``) <-> lmforge.

Gemma is Llama's network (same tensor names, RoPE, grouped-query attention) with four changes:

    RMSNorm scaled by (1 + weight)              -> norm = "rmsnorm_1p" (weights kept as stored)
    GeGLU feed-forward with tanh-approximate GELU -> activation = "geglu_tanh"
    token embeddings times sqrt(hidden_size)    -> scale_embeddings = true
    a head width of its own (head_dim = 256)    -> head_dim, any n_head * head_dim

The output matrix is usually tied to the embedding. Old configs name the activation
``hidden_activation``, or ``hidden_act = "gelu"``, which transformers reads as the tanh GELU too.
Gemma multiplies the embeddings by sqrt(hidden_size) rounded to the weights' dtype: lmforge
matches it exactly in float32 (in bfloat16 the rounding of that one factor may differ).
"""

from __future__ import annotations

from ...models import ModelConfig
from .base import PLAIN_DECODER, Family, hf_option, need, problems
from .llama import _rope, state_dict_from_hf, state_dict_to_hf

_ACTS = ("gelu_pytorch_tanh", "gelu", "gelu_new")
"""The activations transformers runs as the tanh-approximate GELU in a Gemma model."""


def config_from_hf(hf: dict) -> ModelConfig:
    """A ``transformers`` Gemma config (as a dict) -> ModelConfig."""
    mt = "gemma"
    act = {"hidden_act": hf.get("hidden_activation") or hf.get("hidden_act", "gelu_pytorch_tanh")}
    hf_option(act, "hidden_act", None, _ACTS, mt)
    hf_option(hf, "use_bidirectional_attention", None, (None, False), mt)
    theta, scaling = _rope(hf, mt)
    d, heads = need(hf, "hidden_size", mt), need(hf, "num_attention_heads", mt)
    head_dim = hf.get("head_dim") or 256
    kv = hf.get("num_key_value_heads") or heads
    return ModelConfig(
        vocab_size=need(hf, "vocab_size", mt), context_length=hf.get("max_position_embeddings")
        or 8192, d_model=d, n_layer=need(hf, "num_hidden_layers", mt), n_head=heads,
        n_kv_head=None if kv == heads else kv,
        head_dim=None if head_dim * heads == d else head_dim,
        d_ff=need(hf, "intermediate_size", mt), activation="geglu_tanh", norm="rmsnorm_1p",
        norm_eps=hf.get("rms_norm_eps", 1e-6), prenorm=True, positional="rope", rope_theta=theta,
        rope_scaling=scaling, bias=False, attn_bias=True if hf.get("attention_bias") else None,
        tie_embeddings=hf.get("tie_word_embeddings", True), scale_embeddings=True)


def config_to_hf(cfg: ModelConfig) -> dict:
    """GemmaConfig's config.json entries."""
    return {"vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model,
            "intermediate_size": cfg.ff_dim, "num_hidden_layers": cfg.n_layer,
            "num_attention_heads": cfg.n_head, "num_key_value_heads": cfg.n_kv_head or cfg.n_head,
            "head_dim": cfg.dim_head, "hidden_act": "gelu_pytorch_tanh",
            "max_position_embeddings": cfg.context_length, "rms_norm_eps": cfg.norm_eps,
            "rope_theta": cfg.rope_theta,
            "rope_scaling": dict(cfg.rope_scaling) if cfg.rope_scaling else None,
            "attention_bias": cfg.use_attn_bias, "attention_dropout": cfg.dropout,
            "tie_word_embeddings": cfg.tie_embeddings}


def export_problems(cfg: ModelConfig) -> list[str]:
    out = problems(cfg, **PLAIN_DECODER, positional=("rope",), norm=("rmsnorm_1p",),
                   activation=("geglu_tanh",), scale_embeddings=(True,), qk_norm=(False,),
                   attention_window=(0,))
    if cfg.use_ff_bias:
        out.append("ff_bias=True (Gemma's MLP has no biases)")
    return out


FAMILY = Family(name="gemma", model_types=("gemma",), architecture="GemmaForCausalLM", prefix="",
                config_from_hf=config_from_hf, config_to_hf=config_to_hf,
                state_from_hf=state_dict_from_hf, state_to_hf=state_dict_to_hf,
                export_problems=export_problems)
