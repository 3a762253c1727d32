"""Hugging Face BART (``BartForConditionalGeneration``) <-> lmforge's encoder–decoder
(``arch = "seq2seq"``).

BART is MarianMT's post-norm Transformer (the same tensor names, :mod:`.marian`) with three
differences: learned positions, a LayerNorm on the summed embeddings of each stack
(``layernorm_embedding`` -> ``embed_norm = true``), and GELU. Token embeddings are scaled by
sqrt(d_model) only with ``scale_embedding``; encoder, decoder and (with
``tie_word_embeddings``) the output matrix share ``model.shared``; ``final_logits_bias`` is the
output bias.

Positions. BART's position tables have ``max_position_embeddings + 2`` rows and position p
reads row p + 2 (the offset is a fairseq leftover: rows 0 and 1 are never read). lmforge keeps
the rows that are read: ``{encoder,decoder}.pos.weight`` = the table without its first two
rows, so no offset option is needed; export writes two zero rows in front.

Tokens: BART starts the decoder from ``</s>`` (``decoder_start_token_id = 2``). Forced first
and last tokens (``forced_bos_token_id``, ``forced_eos_token_id``, generation settings) are
not applied by lmforge's decoding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch

from ...errors import ConfigError
from ...models import ModelConfig
from .base import ACTIVATIONS, Family, Tensors, hf_option, need, problems, take
from .marian import TO_HF_ACTIVATION, _pairs, _same
from .seq2seq_dir import import_seq2seq_dir, untied_head

NAME = "bart"
PREFIX = "model."
OFFSET = 2
"""Rows at the start of BART's position tables that no position reads."""
HF_LAYER_NORM_EPS = 1e-5
DEFAULTS = {"encoder_layers": 12, "decoder_layers": 12, "encoder_attention_heads": 16,
            "decoder_attention_heads": 16, "encoder_ffn_dim": 4096, "decoder_ffn_dim": 4096}


def config_from_hf(hf: dict) -> ModelConfig:
    """A ``transformers`` BartConfig (as a dict) -> ModelConfig."""
    act = hf_option(hf, "activation_function", "gelu", ACTIVATIONS, NAME)
    hf = {**DEFAULTS, **{k: v for k, v in hf.items() if v is not None}}
    heads = _same(hf, "attention_heads", "number of heads")
    d = need(hf, "d_model", NAME)
    if d % heads:
        raise ConfigError(f"Hugging Face config d_model={d} is not a multiple of the "
                          f"{heads} attention heads")
    return ModelConfig(
        arch="seq2seq", vocab_size=need(hf, "vocab_size", NAME),
        context_length=hf.get("max_position_embeddings", 1024), d_model=d,
        n_layer=hf["decoder_layers"], encoder_layers=hf["encoder_layers"], n_head=heads,
        d_ff=_same(hf, "ffn_dim", "feed-forward width"), activation=ACTIVATIONS[act],
        norm="layernorm", norm_eps=HF_LAYER_NORM_EPS, prenorm=False, positional="learned",
        bias=True, embed_norm=True, tie_embeddings=hf.get("tie_word_embeddings", True),
        share_embeddings=True, scale_embeddings=bool(hf.get("scale_embedding", False)),
        output_bias=True, dropout=float(hf.get("dropout", 0.1)), init_std=hf.get("init_std", 0.02))


def config_to_hf(cfg: ModelConfig) -> dict:
    """The BartConfig fields of ``cfg``; the exporter adds the token ids."""
    return {"vocab_size": cfg.vocab_size, "max_position_embeddings": cfg.context_length,
            "d_model": cfg.d_model, "encoder_layers": cfg.n_encoder_layer,
            "decoder_layers": cfg.n_layer, "encoder_attention_heads": cfg.n_head,
            "decoder_attention_heads": cfg.n_head, "encoder_ffn_dim": cfg.ff_dim,
            "decoder_ffn_dim": cfg.ff_dim, "activation_function": TO_HF_ACTIVATION[cfg.activation],
            "scale_embedding": cfg.scale_embeddings, "tie_word_embeddings": cfg.tie_embeddings,
            "is_encoder_decoder": True, "dropout": cfg.dropout, "attention_dropout": 0.0,
            "activation_dropout": 0.0, "init_std": cfg.init_std, "forced_eos_token_id": None,
            "forced_bos_token_id": None}


def export_problems(cfg: ModelConfig) -> list[str]:
    out = problems(cfg, arch=("seq2seq",), prenorm=(False,), norm=("layernorm",),
                   norm_eps=(HF_LAYER_NORM_EPS,), positional=("learned",),
                   activation=tuple(TO_HF_ACTIVATION), bias=(True,), attn_bias=(None, True),
                   ff_bias=(None, True), n_kv_head=(None, cfg.n_head), embed_norm=(True,),
                   share_embeddings=(True,), src_vocab_size=(0, cfg.vocab_size),
                   type_vocab_size=(0,), qk_norm=(False,))
    if cfg.dim_head * cfg.n_head != cfg.d_model:
        out.append(f"head_dim={cfg.head_dim} (BART needs d_model / n_head)")
    return out


def _hf_names(sd: Mapping[str, torch.Tensor]) -> Tensors:
    """HF names with the ``model.`` prefix (a bare BartModel's checkpoint has none)."""
    top = ("lm_head.", "final_logits_bias")
    return {k if k.startswith((PREFIX, *top)) else PREFIX + k: v for k, v in sd.items()}


def state_dict_from_hf(sd: Mapping[str, torch.Tensor], cfg: ModelConfig) -> Tensors:
    """BartForConditionalGeneration state dict -> Seq2SeqLM's."""
    src = _hf_names(sd)
    out = {ours: take(src, PREFIX + hf).contiguous() for hf, ours, _ in _pairs(cfg)}
    out["encoder.embed.weight"] = take(src, f"{PREFIX}shared.weight").contiguous()  # (V, C)
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = take(src, "lm_head.weight").contiguous()
    bias = src.get("final_logits_bias")  # (1, V); transformers fills a missing one with zeros
    out["lm_head.bias"] = (bias.reshape(-1) if bias is not None
                           else out["encoder.embed.weight"].new_zeros(cfg.vocab_size)).contiguous()
    for side in ("encoder", "decoder"):
        for p in ("weight", "bias"):
            out[f"{side}.embed_norm.{p}"] = take(src, f"{PREFIX}{side}.layernorm_embedding.{p}")
        table = take(src, f"{PREFIX}{side}.embed_positions.weight")  # (L + 2, C)
        out[f"{side}.pos.weight"] = table[OFFSET:].contiguous()  # (L, C): the rows read
    return out


def state_dict_to_hf(sd: Mapping[str, torch.Tensor], cfg: ModelConfig) -> Tensors:
    """Seq2SeqLM state dict -> BartForConditionalGeneration's (the shared table once)."""
    out = {PREFIX + hf: take(sd, ours).contiguous() for hf, ours, _ in _pairs(cfg)}
    out[f"{PREFIX}shared.weight"] = take(sd, "encoder.embed.weight").contiguous()
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = take(sd, "lm_head.weight").contiguous()
    bias = sd.get("lm_head.bias")
    out["final_logits_bias"] = (bias if bias is not None else sd["encoder.embed.weight"].new_zeros(
        cfg.vocab_size)).reshape(1, -1).contiguous()
    for side in ("encoder", "decoder"):
        for p in ("weight", "bias"):
            out[f"{PREFIX}{side}.layernorm_embedding.{p}"] = take(sd, f"{side}.embed_norm.{p}")
        table = take(sd, f"{side}.pos.weight")  # (L, C)
        out[f"{PREFIX}{side}.embed_positions.weight"] = torch.cat(
            [table.new_zeros(OFFSET, table.shape[1]), table])  # (L + 2, C)
    return out


def _fit_checkpoint(weights: dict[str, torch.Tensor], cfg: ModelConfig, hf: dict) -> ModelConfig:
    """HF names; copies of the shared table (transformers ties them on load) removed; the
    output matrix untied when the checkpoint has one of its own."""
    named = _hf_names(weights)
    weights.clear()
    weights.update(named)
    for side in ("encoder", "decoder"):
        copy = weights.pop(f"{PREFIX}{side}.embed_tokens.weight", None)
        if copy is not None:
            weights.setdefault(f"{PREFIX}shared.weight", copy)
    if cfg.tie_embeddings:  # transformers ties the output matrix: a stored one is not read
        weights.pop("lm_head.weight", None)
        return cfg
    return replace(cfg, tie_embeddings=untied_head(weights, f"{PREFIX}shared.weight"))


def import_dir(src: Path, out: Path, dtype: str | None = None) -> Path:
    """Convert a BART directory (config.json, weights, tokenizer.json) into a model directory."""
    return import_seq2seq_dir(src, out, dtype, FAMILY, _fit_checkpoint)


FAMILY = Family(name=NAME, model_types=(NAME,), architecture="BartForConditionalGeneration",
                prefix=PREFIX, config_from_hf=config_from_hf, config_to_hf=config_to_hf,
                state_from_hf=state_dict_from_hf, state_to_hf=state_dict_to_hf,
                export_problems=export_problems, import_dir=import_dir)
