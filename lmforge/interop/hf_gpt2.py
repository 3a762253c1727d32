"""Hugging Face GPT-2 <-> lmforge: configs and weights.

GPT-2 stores its projections as ``Conv1D`` (weight shape (in, out)) with q, k, v fused in one
``c_attn`` matrix; lmforge uses ``nn.Linear`` (out, in) with separate q/k/v projections.
"""

from __future__ import annotations

import torch

from ..models import ModelConfig


def config_from_hf(hf: dict) -> ModelConfig:
    """A ``transformers`` GPT2Config (as a dict) -> the equivalent lmforge ModelConfig."""
    act = hf.get("activation_function", "gelu_new")
    return ModelConfig(
        vocab_size=hf["vocab_size"], context_length=hf.get("n_positions", 1024),
        d_model=hf.get("n_embd", 768), n_layer=hf.get("n_layer", 12), n_head=hf.get("n_head", 12),
        d_ff=hf.get("n_inner") or None,
        activation={"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu",
                    "relu": "relu"}[act],
        norm="layernorm", norm_eps=hf.get("layer_norm_epsilon", 1e-5), prenorm=True,
        positional="learned", bias=True, tie_embeddings=hf.get("tie_word_embeddings", True))


def state_dict_from_hf(sd: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """GPT2LMHeadModel state dict -> CausalLM state dict."""
    sd = {k.removeprefix("transformer."): v for k, v in sd.items()}
    C = cfg.d_model
    out = {"backbone.embed.weight": sd["wte.weight"], "backbone.pos.weight": sd["wpe.weight"],
           "backbone.norm.weight": sd["ln_f.weight"], "backbone.norm.bias": sd["ln_f.bias"]}
    for i in range(cfg.n_layer):
        h, o = f"h.{i}.", f"backbone.layers.{i}."
        w = sd[h + "attn.c_attn.weight"].t()  # (3C, C)
        b = sd[h + "attn.c_attn.bias"]
        for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
            out[o + f"attn.{name}.weight"] = w[j * C:(j + 1) * C]
            out[o + f"attn.{name}.bias"] = b[j * C:(j + 1) * C]
        out[o + "attn.o_proj.weight"] = sd[h + "attn.c_proj.weight"].t()
        out[o + "attn.o_proj.bias"] = sd[h + "attn.c_proj.bias"]
        out[o + "ff.up_proj.weight"] = sd[h + "mlp.c_fc.weight"].t()
        out[o + "ff.up_proj.bias"] = sd[h + "mlp.c_fc.bias"]
        out[o + "ff.down_proj.weight"] = sd[h + "mlp.c_proj.weight"].t()
        out[o + "ff.down_proj.bias"] = sd[h + "mlp.c_proj.bias"]
        for a, b_ in (("ln_1", "norm1"), ("ln_2", "norm2")):
            out[o + f"{b_}.weight"] = sd[h + f"{a}.weight"]
            out[o + f"{b_}.bias"] = sd[h + f"{a}.bias"]
    out["lm_head.weight"] = sd.get("lm_head.weight", sd["wte.weight"])
    return {k: v.contiguous() for k, v in out.items()}
