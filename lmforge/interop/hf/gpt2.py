"""Hugging Face GPT-2 (``GPT2LMHeadModel``) <-> lmforge: configs and weights.

GPT-2 stores its projections as ``Conv1D`` (weight shape (in, out)) with q, k, v fused in one
``c_attn`` matrix; lmforge uses ``nn.Linear`` (out, in) with separate q/k/v projections.
HF's ``activation_function`` "gelu" is the exact (erf) GELU, "gelu_new" the tanh approximation.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ...models import ModelConfig
from .base import (ACTIVATIONS, PLAIN_DECODER, Family, Pair, Tensors, hf_option, lm_head_from_hf,
                   lm_head_to_hf, need, problems, rename, take)

PREFIX = "transformer."
TO_HF_ACTIVATION = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu", "silu": "silu"}
_QKV = ("q_proj", "k_proj", "v_proj")
# per layer: (HF module under h.{i}., lmforge module under backbone.layers.{i}., Conv1D)
_LAYER = (("attn.c_proj", "attn.o_proj", True), ("mlp.c_fc", "ff.up_proj", True),
          ("mlp.c_proj", "ff.down_proj", True), ("ln_1", "norm1", False), ("ln_2", "norm2", False))


def config_from_hf(hf: dict) -> ModelConfig:
    """A ``transformers`` GPT2Config (as a dict) -> the equivalent lmforge ModelConfig."""
    act = hf_option(hf, "activation_function", "gelu_new", ACTIVATIONS, "gpt2")
    # options that change the computation (reorder_and_upcast_attn only changes precision)
    for key, default in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                         ("add_cross_attention", False)):
        hf_option(hf, key, default, (default,), "gpt2")
    return ModelConfig(
        vocab_size=need(hf, "vocab_size", "gpt2"), context_length=hf.get("n_positions", 1024),
        d_model=hf.get("n_embd", 768), n_layer=hf.get("n_layer", 12), n_head=hf.get("n_head", 12),
        d_ff=hf.get("n_inner") or None, activation=ACTIVATIONS[act], norm="layernorm",
        norm_eps=hf.get("layer_norm_epsilon", 1e-5), prenorm=True, positional="learned",
        bias=True, tie_embeddings=hf.get("tie_word_embeddings", True))


def config_to_hf(cfg: ModelConfig) -> dict:
    return {"vocab_size": cfg.vocab_size, "n_positions": cfg.context_length, "n_embd": cfg.d_model,
            "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_inner": cfg.ff_dim,
            "activation_function": TO_HF_ACTIVATION[cfg.activation],
            "layer_norm_epsilon": cfg.norm_eps, "tie_word_embeddings": cfg.tie_embeddings,
            "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout, "attn_pdrop": cfg.dropout,
            "scale_attn_weights": True}


def export_problems(cfg: ModelConfig) -> list[str]:
    return problems(cfg, **PLAIN_DECODER, positional=("learned",), norm=("layernorm",),
                    activation=tuple(TO_HF_ACTIVATION), bias=(True,),
                    attn_bias=(None, True), ff_bias=(None, True), n_kv_head=(None, cfg.n_head),
                    head_dim=(None, cfg.d_model / cfg.n_head))


def _pairs(cfg: ModelConfig) -> list[Pair]:
    """Every tensor but the fused c_attn and the output matrix, HF names without ``PREFIX``."""
    pairs: list[Pair] = [("wte.weight", "backbone.embed.weight", False),
                         ("wpe.weight", "backbone.pos.weight", False),
                         ("ln_f.weight", "backbone.norm.weight", False),
                         ("ln_f.bias", "backbone.norm.bias", False)]
    for i in range(cfg.n_layer):
        for hf, ours, conv in _LAYER:
            for p in ("weight", "bias"):
                transposed = conv and p == "weight"
                pairs.append((f"h.{i}.{hf}.{p}", f"backbone.layers.{i}.{ours}.{p}", transposed))
    return pairs


def state_dict_from_hf(sd: Mapping[str, torch.Tensor], cfg: ModelConfig) -> Tensors:
    """GPT2LMHeadModel state dict (with or without the ``transformer.`` prefix) -> CausalLM's."""
    src = {k.removeprefix(PREFIX): v for k, v in sd.items()}
    out = rename(src, _pairs(cfg), to_hf=False)
    for i in range(cfg.n_layer):
        w = take(src, f"h.{i}.attn.c_attn.weight").t()  # (C, 3C) -> (3C, C)
        b = take(src, f"h.{i}.attn.c_attn.bias")  # (3C,)
        for name, wj, bj in zip(_QKV, w.chunk(3), b.chunk(3)):  # (C, C), (C,)
            out[f"backbone.layers.{i}.attn.{name}.weight"] = wj.contiguous()
            out[f"backbone.layers.{i}.attn.{name}.bias"] = bj.contiguous()
    out["lm_head.weight"] = lm_head_from_hf(src, cfg, "wte.weight")
    return out


def state_dict_to_hf(sd: Mapping[str, torch.Tensor], cfg: ModelConfig) -> Tensors:
    """CausalLM state dict -> GPT2LMHeadModel's (HF names)."""
    out = rename(sd, _pairs(cfg), to_hf=True)
    for i in range(cfg.n_layer):
        attn = f"backbone.layers.{i}.attn."
        w = torch.cat([take(sd, f"{attn}{n}.weight") for n in _QKV])  # (3C, C)
        out[f"h.{i}.attn.c_attn.weight"] = w.t().contiguous()  # (C, 3C)
        out[f"h.{i}.attn.c_attn.bias"] = torch.cat([take(sd, f"{attn}{n}.bias") for n in _QKV])
    return {PREFIX + k: v for k, v in out.items()} | lm_head_to_hf(sd, cfg)


FAMILY = Family(name="gpt2", model_types=("gpt2",), architecture="GPT2LMHeadModel", prefix=PREFIX,
                config_from_hf=config_from_hf, config_to_hf=config_to_hf,
                state_from_hf=state_dict_from_hf, state_to_hf=state_dict_to_hf,
                export_problems=export_problems)
