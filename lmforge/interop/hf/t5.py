"""Hugging Face T5 (``T5ForConditionalGeneration``: T5 v1.0 and v1.1-style checkpoints) <->
lmforge's encoder–decoder (``arch = "seq2seq"``) with ``positional = "t5_relative"``.

T5 is a pre-norm encoder–decoder with RMSNorm (no bias, no mean), no biases anywhere, no
position vectors: each stack has one learned per-head bias over bucketed relative distances
(``lmforge.blocks.t5_bias``; bidirectional in the encoder, causal in the decoder), stored in
its first layer and added to the self-attention scores of all layers. Feed-forward: ReLU
(v1.0, ``feed_forward_proj = "relu"``) or tanh-GELU-gated (v1.1, ``"gated-gelu"``). Names:

    shared                                            encoder.embed (= decoder.embed)
    {encoder,decoder}.block.i.layer.0.SelfAttention.{q,k,v,o}   ....layers.i.attn.{q,k,v,o}_proj
    ....block.0.layer.0.SelfAttention.relative_attention_bias   ....t5_bias
    decoder.block.i.layer.1.EncDecAttention.{q,k,v,o}           decoder.layers.i.cross_attn.*
    ....layer.0.layer_norm / (decoder) layer.1.layer_norm       norm1 / norm_cross
    ....DenseReluDense.{wi | wi_0, wi_1, wo} + its layer_norm   ff.{up_proj | gate_proj, up_proj,
                                                                down_proj}, norm2
    {encoder,decoder}.final_layer_norm                          {encoder,decoder}.norm
    lm_head (when not tied)                                     lm_head

Two of T5's differences are folded into the weights, so the model needs no options for them:

* T5 does not divide the attention scores by sqrt(head_dim); lmforge's attention backends
  do. The query projections are stored multiplied by sqrt(head_dim) (divided again on
  export): the scores are the same, the relative bias is added unscaled in both.
* With ``tie_word_embeddings`` (``scale_decoder_outputs`` in transformers 5), T5 multiplies
  the decoder's output by d_model**-0.5 before the (tied) output matrix; that factor is folded
  into the decoder's final RMSNorm weight. Export writes a tied model with the factor
  (``tie_word_embeddings = scale_decoder_outputs = true``, the norm divided by it, as every
  transformers version reads it) and an untied one without it.

Tokens: T5 starts the decoder from ``<pad>``; meta.json's ``seq2seq_tokens`` records it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch

from ...errors import ConfigError
from ...models import ModelConfig
from .base import Family, Tensors, need, problems, take
from .seq2seq_dir import import_seq2seq_dir, untied_head

NAME = "t5"
FROM_HF_FF = {"relu": "relu", "gelu": "gelu", "gelu_new": "gelu_tanh", "silu": "silu",
              "gated-gelu": "geglu_tanh", "gated-gelu_new": "geglu_tanh", "gated-silu": "swiglu"}
"""T5's ``feed_forward_proj`` -> lmforge activation (transformers reads "gated-gelu" as the
tanh-approximate GELU gate)."""
TO_HF_FF = {"relu": "relu", "gelu": "gelu", "gelu_tanh": "gelu_new", "silu": "silu",
            "geglu_tanh": "gated-gelu", "swiglu": "gated-silu"}
_ATTN = ("q", "k", "v", "o")


def _scales_output(hf: dict) -> bool:
    """Whether transformers multiplies the decoder output by d_model**-0.5 (T5 v1.0)."""
    if hf.get("scale_decoder_outputs") is not None:
        return bool(hf["scale_decoder_outputs"])
    return hf.get("tie_word_embeddings", True) is not False


def config_from_hf(hf: dict) -> ModelConfig:
    """A ``transformers`` T5Config (as a dict) -> ModelConfig (tied output matrix; the importer
    unties it for a checkpoint with an ``lm_head`` of its own)."""
    proj = hf.get("feed_forward_proj", "relu")
    if proj not in FROM_HF_FF:
        raise ConfigError(f"Hugging Face config feed_forward_proj={proj!r} is not supported for "
                          f"t5 models; supported: {', '.join(map(repr, FROM_HF_FF))}")
    d, heads = need(hf, "d_model", NAME), need(hf, "num_heads", NAME)
    d_kv = hf.get("d_kv", 64)
    layers = hf.get("num_layers", 6)
    return ModelConfig(
        arch="seq2seq", vocab_size=need(hf, "vocab_size", NAME),
        context_length=hf.get("n_positions") or 512, d_model=d,
        n_layer=hf.get("num_decoder_layers") or layers, encoder_layers=layers, n_head=heads,
        head_dim=None if d_kv * heads == d else d_kv, d_ff=hf.get("d_ff", 2048),
        activation=FROM_HF_FF[proj], norm="rmsnorm", norm_eps=hf.get("layer_norm_epsilon", 1e-6),
        prenorm=True, positional="t5_relative",
        relative_buckets=hf.get("relative_attention_num_buckets", 32),
        relative_max_distance=hf.get("relative_attention_max_distance", 128), bias=False,
        tie_embeddings=True, share_embeddings=True, scale_embeddings=False, output_bias=False,
        dropout=float(hf.get("dropout_rate", 0.1)))


def config_to_hf(cfg: ModelConfig) -> dict:
    """The T5Config fields of ``cfg``; the exporter adds the token ids."""
    return {"vocab_size": cfg.vocab_size, "d_model": cfg.d_model, "d_kv": cfg.dim_head,
            "d_ff": cfg.ff_dim, "num_layers": cfg.n_encoder_layer, "num_decoder_layers": cfg.n_layer,
            "num_heads": cfg.n_head, "relative_attention_num_buckets": cfg.relative_buckets,
            "relative_attention_max_distance": cfg.relative_max_distance,
            "feed_forward_proj": TO_HF_FF[cfg.activation], "layer_norm_epsilon": cfg.norm_eps,
            "dropout_rate": cfg.dropout, "n_positions": cfg.context_length,
            "tie_word_embeddings": cfg.tie_embeddings,
            "scale_decoder_outputs": cfg.tie_embeddings, "is_encoder_decoder": True}


def export_problems(cfg: ModelConfig) -> list[str]:
    return problems(cfg, arch=("seq2seq",), prenorm=(True,), norm=("rmsnorm",),
                    positional=("t5_relative",), activation=tuple(TO_HF_FF), bias=(False,),
                    attn_bias=(None, False), ff_bias=(None, False), output_bias=(False,),
                    n_kv_head=(None, cfg.n_head), share_embeddings=(True,),
                    src_vocab_size=(0, cfg.vocab_size), type_vocab_size=(0,),
                    embed_norm=(False,), scale_embeddings=(False,), qk_norm=(False,))


def _ff_names(cfg: ModelConfig) -> list[tuple[str, str]]:
    if cfg.activation in ("geglu_tanh", "swiglu"):
        return [("wi_0", "gate_proj"), ("wi_1", "up_proj"), ("wo", "down_proj")]
    return [("wi", "up_proj"), ("wo", "down_proj")]


def _pairs(cfg: ModelConfig) -> list[tuple[str, str, bool]]:
    """(HF name, lmforge name, whether it is a query projection) of every block tensor."""
    out = []
    for side, n in (("encoder", cfg.n_encoder_layer), ("decoder", cfg.n_layer)):
        for i in range(n):
            hf, ours = f"{side}.block.{i}.layer", f"{side}.layers.{i}"
            subs = [("SelfAttention", "attn", "norm1")]
            if side == "decoder":
                subs.append(("EncDecAttention", "cross_attn", "norm_cross"))
            for j, (attn, our_attn, norm) in enumerate(subs):
                out += [(f"{hf}.{j}.{attn}.{p}.weight", f"{ours}.{our_attn}.{p}_proj.weight",
                         p == "q") for p in _ATTN]
                out.append((f"{hf}.{j}.layer_norm.weight", f"{ours}.{norm}.weight", False))
            j = len(subs)
            out += [(f"{hf}.{j}.DenseReluDense.{a}.weight", f"{ours}.ff.{b}.weight", False)
                    for a, b in _ff_names(cfg)]
            out.append((f"{hf}.{j}.layer_norm.weight", f"{ours}.norm2.weight", False))
    for side in ("encoder", "decoder"):
        out.append((f"{side}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                    f"{side}.t5_bias.weight", False))
        out.append((f"{side}.final_layer_norm.weight", f"{side}.norm.weight", False))
    return out


def state_dict_from_hf(sd: Mapping[str, torch.Tensor], cfg: ModelConfig) -> Tensors:
    """T5ForConditionalGeneration state dict -> Seq2SeqLM's (queries times sqrt(head_dim);
    the importer has already folded a decoder-output factor into the final norm)."""
    q_scale = math.sqrt(cfg.dim_head)
    out = {ours: (take(sd, hf) * q_scale if is_q else take(sd, hf)).contiguous()
           for hf, ours, is_q in _pairs(cfg)}
    out["encoder.embed.weight"] = take(sd, "shared.weight").contiguous()  # (V, C)
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = take(sd, "lm_head.weight").contiguous()
    return out


def state_dict_to_hf(sd: Mapping[str, torch.Tensor], cfg: ModelConfig) -> Tensors:
    """Seq2SeqLM state dict -> T5ForConditionalGeneration's (a tied model with its decoder
    output factor d_model**-0.5 taken out of the final norm; see the module docstring)."""
    q_scale = math.sqrt(cfg.dim_head)
    out = {hf: (take(sd, ours) / q_scale if is_q else take(sd, ours)).contiguous()
           for hf, ours, is_q in _pairs(cfg)}
    if cfg.tie_embeddings:  # transformers multiplies by d_model**-0.5 again
        out["decoder.final_layer_norm.weight"] = out["decoder.final_layer_norm.weight"] * math.sqrt(cfg.d_model)
    out["shared.weight"] = take(sd, "encoder.embed.weight").contiguous()
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = take(sd, "lm_head.weight").contiguous()
    return out


IGNORED = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight",
           "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight")
"""Tensors transformers ties to ``shared`` or ignores on load."""


def _fit_checkpoint(weights: dict[str, torch.Tensor], cfg: ModelConfig, hf: dict) -> ModelConfig:
    """Untie the output matrix when the checkpoint has its own; fold the decoder-output factor
    of a v1.0-style config into the decoder's final norm."""
    for name in IGNORED:
        copy = weights.pop(name, None)
        if copy is not None and name.endswith("embed_tokens.weight"):
            weights.setdefault("shared.weight", copy)
    tie = not untied_head(weights, "shared.weight")
    if _scales_output(hf):
        norm = take(weights, "decoder.final_layer_norm.weight")
        weights["decoder.final_layer_norm.weight"] = norm * cfg.d_model ** -0.5
    return replace(cfg, tie_embeddings=tie)


def import_dir(src: Path, out: Path, dtype: str | None = None) -> Path:
    """Convert a T5 directory (config.json, weights, tokenizer.json) into a model directory."""
    return import_seq2seq_dir(src, out, dtype, FAMILY, _fit_checkpoint)


FAMILY = Family(name=NAME, model_types=(NAME,), architecture="T5ForConditionalGeneration",
                prefix="", config_from_hf=config_from_hf, config_to_hf=config_to_hf,
                state_from_hf=state_dict_from_hf, state_to_hf=state_dict_to_hf,
                export_problems=export_problems, import_dir=import_dir)
