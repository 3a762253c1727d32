"""Hugging Face MarianMT (``MarianMTModel``, the Helsinki-NLP opus-mt models) <-> lmforge's
encoder–decoder (``arch = "seq2seq"``): configs, weights and, on import, the whole directory.

MarianMT is the original post-norm Transformer: token embeddings scaled by sqrt(d_model)
(``scale_embedding``), fixed sinusoidal positions, post-norm blocks (LayerNorm eps 1e-5, no
final norm), one table shared by encoder, decoder and output matrix, and a bias on the logits
(``final_logits_bias``). The names map one to one:

    model.shared                                    encoder.embed (= decoder.embed = lm_head)
    final_logits_bias (1, V)                        lm_head.bias (V,)
    model.{encoder,decoder}.layers.i.self_attn.{q,k,v,out}_proj   ....layers.i.attn.{q,k,v,o}_proj
    model.decoder.layers.i.encoder_attn.{q,k,v,out}_proj          ....layers.i.cross_attn.*
    ....self_attn_layer_norm / encoder_attn_layer_norm / final_layer_norm   norm1 / norm_cross / norm2
    ....fc1 / fc2                                                 ....ff.up_proj / ff.down_proj

Positions. Marian's sinusoidal table puts the sines in the first half of the channels and the
cosines in the second; lmforge's (``positional = "sinusoidal"``) interleaves them. The two
tables are the same columns in another order, and a transformer computes the same function
when every tensor's residual-stream axis (embeddings, LayerNorms, the input side of q/k/v/fc1,
the output side of o_proj/fc2, the output matrix) is permuted the same way. So a Marian
checkpoint is imported as ``positional = "sinusoidal"`` with its residual channels reordered
(:func:`marian_order`), and exported back in Marian's order: exact both ways, and
lmforge-trained sinusoidal models export too. A checkpoint that stores a position table other
than Marian's (transformers loads a stored table as is) is imported with
``positional = "learned"`` holding that table, channels not reordered; lmforge models with
learned positions are exported with their tables written out.

Embeddings. With ``tie_word_embeddings`` (every opus-mt model) transformers ties encoder,
decoder and output tables to ``model.shared``. Without it, transformers 5 ties nothing: each
side reads its own ``embed_tokens`` and the output matrix is ``lm_head``; such a checkpoint is
imported with an untied output matrix, and with separate encoder and decoder tables
(``share_embeddings = false``) when they differ.

Tokenizer: a ``tokenizer.json`` whose ids are the model's, or Marian's SentencePiece files
(source.spm + vocab.json) rebuilt with MarianTokenizer's ids (:func:`read_tokenizer`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch

from ...blocks.positions import sinusoidal_table
from ...errors import CheckpointError, ConfigError, TokenizerError
from ...modeldir.directory import check_tensors, check_vocab, write_model_dir
from ...modeldir.meta import ModelMeta, Seq2SeqTokenNames, Source
from ...models import ModelConfig
from .base import (
    ACTIVATIONS,
    Family,
    Tensors,
    cast_tensors,
    dtype_name,
    hf_option,
    need,
    own_storage,
    problems,
    take,
    unused_tensors,
)
from .files import read_hf_config, read_hf_tokenizer, read_hf_weights, special_tokens

NAME = "marian"
PREFIX = "model."
HF_LAYER_NORM_EPS = 1e-5
"""MarianMT's LayerNorms are ``nn.LayerNorm(d_model)``: eps is fixed at torch's default."""
TO_HF_ACTIVATION = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "swish"}
LEGACY_OPTIONS = {"normalize_before": False, "normalize_embedding": False,
                  "layernorm_embedding": False, "add_final_layer_norm": False,
                  "static_position_embeddings": True, "add_bias_logits": False,
                  "share_encoder_decoder_embeddings": True, "is_encoder_decoder": True}
"""Config options (some from older transformers' Bart-style MarianConfig) and the one value a
MarianMT that lmforge can represent has: post-norm blocks without extra norms, fixed
positions, one token table for encoder and decoder."""
_TOKENS = {"start": "decoder_start_token_id", "eos": "eos_token_id", "pad": "pad_token_id"}

# (HF module, lmforge module, where the residual axis is: "in" = the weight's input side,
# "out" = the weight's output side and the bias)
_ATTN = (("q_proj", "q_proj", "in"), ("k_proj", "k_proj", "in"), ("v_proj", "v_proj", "in"),
         ("out_proj", "o_proj", "out"))
_ENCODER_LAYER = ([(f"self_attn.{a}", f"attn.{b}", r) for a, b, r in _ATTN]
                  + [("self_attn_layer_norm", "norm1", "out"), ("fc1", "ff.up_proj", "in"),
                     ("fc2", "ff.down_proj", "out"), ("final_layer_norm", "norm2", "out")])
_DECODER_LAYER = (_ENCODER_LAYER + [(f"encoder_attn.{a}", f"cross_attn.{b}", r) for a, b, r in _ATTN]
                  + [("encoder_attn_layer_norm", "norm_cross", "out")])


def marian_order(dim: int) -> torch.Tensor:
    """Marian's channel order in lmforge's: channel j of a Marian tensor is channel
    ``marian_order(dim)[j]`` of the lmforge one (even channels, the sines, then odd ones, the
    cosines).  (C,)"""
    return torch.cat([torch.arange(0, dim, 2), torch.arange(1, dim, 2)])


def marian_positions(n_pos: int, dim: int) -> torch.Tensor:
    """The position table MarianMT computes (sines in the first half, cosines in the second),
    from lmforge's interleaved table.  (L, C)"""
    return sinusoidal_table(n_pos, dim)[:, marian_order(dim)]


DEFAULTS = {"encoder_layers": 12, "decoder_layers": 12, "encoder_attention_heads": 16,
            "decoder_attention_heads": 16, "encoder_ffn_dim": 4096, "decoder_ffn_dim": 4096,
            "max_position_embeddings": 1024}
"""MarianConfig's defaults for the fields a config.json may leave out."""


def _same(hf: dict, field: str, what: str) -> int:
    """``encoder_{field}`` = ``decoder_{field}`` (HF defaults filled in), or a ConfigError."""
    enc, dec = (hf.get(k, DEFAULTS[k]) for k in (f"encoder_{field}", f"decoder_{field}"))
    if enc != dec:
        raise ConfigError(f"Hugging Face config encoder_{field}={enc!r} and decoder_{field}="
                          f"{dec!r} differ; lmforge's encoder and decoder have the same {what} "
                          "(supported: equal values)")
    return dec


def config_from_hf(hf: dict) -> ModelConfig:
    """A ``transformers`` MarianConfig (as a dict) -> ModelConfig (sinusoidal positions; the
    importer switches to learned ones for a checkpoint whose stored table differs)."""
    act = hf_option(hf, "activation_function", "gelu", ACTIVATIONS, NAME)
    for key, value in LEGACY_OPTIONS.items():
        hf_option(hf, key, value, (value,), NAME)
    heads = _same(hf, "attention_heads", "number of heads")
    d_ff = _same(hf, "ffn_dim", "feed-forward width")
    vocab = need(hf, "vocab_size", NAME)
    if hf.get("decoder_vocab_size") not in (None, vocab):
        raise ConfigError(f"Hugging Face config decoder_vocab_size={hf['decoder_vocab_size']!r} "
                          f"differs from vocab_size={vocab}; supported: one shared vocabulary")
    d = need(hf, "d_model", NAME)
    if d % heads:
        raise ConfigError(f"Hugging Face config d_model={d} is not a multiple of the "
                          f"{heads} attention heads")
    return ModelConfig(
        arch="seq2seq", vocab_size=vocab,
        context_length=hf.get("max_position_embeddings", DEFAULTS["max_position_embeddings"]),
        d_model=d, n_layer=hf.get("decoder_layers", DEFAULTS["decoder_layers"]),
        encoder_layers=hf.get("encoder_layers", DEFAULTS["encoder_layers"]), n_head=heads, d_ff=d_ff,
        activation=ACTIVATIONS[act], norm="layernorm", norm_eps=HF_LAYER_NORM_EPS, prenorm=False,
        positional="sinusoidal", bias=True, tie_embeddings=hf.get("tie_word_embeddings", True),
        share_embeddings=True, scale_embeddings=bool(hf.get("scale_embedding", False)),
        output_bias=True, dropout=float(hf.get("dropout", 0.1)),
        init_std=hf.get("init_std", 0.02))


def config_to_hf(cfg: ModelConfig) -> dict:
    """The MarianConfig fields of ``cfg``; the token ids (pad, eos, decoder start) are added by
    the exporter from the tokenizer and meta.json's ``seq2seq_tokens``."""
    return {"vocab_size": cfg.vocab_size, "decoder_vocab_size": cfg.vocab_size,
            "max_position_embeddings": cfg.context_length, "d_model": cfg.d_model,
            "encoder_layers": cfg.n_encoder_layer, "decoder_layers": cfg.n_layer,
            "encoder_attention_heads": cfg.n_head, "decoder_attention_heads": cfg.n_head,
            "encoder_ffn_dim": cfg.ff_dim, "decoder_ffn_dim": cfg.ff_dim,
            "activation_function": TO_HF_ACTIVATION[cfg.activation],
            "scale_embedding": cfg.scale_embeddings, "share_encoder_decoder_embeddings": True,
            "tie_word_embeddings": cfg.tie_embeddings, "is_encoder_decoder": True,
            "dropout": cfg.dropout, "attention_dropout": 0.0, "activation_dropout": 0.0,
            "init_std": cfg.init_std, "bos_token_id": None, "forced_eos_token_id": None}


def export_problems(cfg: ModelConfig) -> list[str]:
    out = problems(cfg, arch=("seq2seq",), prenorm=(False,), norm=("layernorm",),
                   norm_eps=(HF_LAYER_NORM_EPS,), positional=("sinusoidal", "learned"),
                   activation=tuple(TO_HF_ACTIVATION), bias=(True,), attn_bias=(None, True),
                   ff_bias=(None, True), n_kv_head=(None, cfg.n_head),
                   src_vocab_size=(0, cfg.vocab_size), type_vocab_size=(0,), embed_norm=(False,))
    if cfg.tie_embeddings and not cfg.share_embeddings:
        out.append("share_embeddings=False with tie_embeddings=True (MarianMT ties the output "
                   "matrix, encoder and decoder tables together, or none of them)")
    if cfg.dim_head * cfg.n_head != cfg.d_model:
        out.append(f"head_dim={cfg.head_dim} (MarianMT needs d_model / n_head)")
    return out


def _pairs(cfg: ModelConfig) -> list[tuple[str, str, str | None]]:
    """(HF name without ``model.``, lmforge name, residual axis) of every tensor but the
    embedding table, the output matrix and bias, and the position tables."""
    out = []
    for side, layer, n in (("encoder", _ENCODER_LAYER, cfg.n_encoder_layer),
                           ("decoder", _DECODER_LAYER, cfg.n_layer)):
        for i in range(n):
            for hf, ours, axis in layer:
                for p in ("weight", "bias"):
                    # a weight (out, in): "in" = dim 1; a bias and a LayerNorm: dim 0
                    where = axis if p == "weight" else ("out" if axis == "out" else None)
                    out.append((f"{side}.layers.{i}.{hf}.{p}", f"{side}.layers.{i}.{ours}.{p}",
                                where))
    return out


def _reorder(t: torch.Tensor, axis: str | None, index: torch.Tensor | None) -> torch.Tensor:
    """Permute the residual-stream axis of ``t`` (``axis``: "in" = last dim of a matrix,
    "out" = first dim) by ``index``; unchanged when ``index`` is None."""
    if index is None or axis is None:
        return t.contiguous()
    dim = 1 if axis == "in" and t.dim() == 2 else 0
    return t.index_select(dim, index.to(t.device)).contiguous()


def _hf_names(sd: Mapping[str, torch.Tensor]) -> Tensors:
    """HF names with the ``model.`` prefix (a bare MarianModel's checkpoint has none)."""
    top = ("lm_head.", "final_logits_bias")
    return {k if k.startswith((PREFIX, *top)) else PREFIX + k: v for k, v in sd.items()}


def _embeddings(src: Mapping[str, torch.Tensor], cfg: ModelConfig):
    """(encoder table, decoder table) (V, C) as transformers 5 uses them: with tied word
    embeddings both are ``model.shared``; without, each side reads its own ``embed_tokens``."""
    shared = next((src[k] for k in (f"{PREFIX}shared.weight", f"{PREFIX}encoder.embed_tokens.weight")
                   if k in src), None)
    if shared is None:
        raise CheckpointError("the checkpoint has no token embeddings (model.shared.weight), "
                              "which a MarianMT model needs")
    if cfg.tie_embeddings:
        return shared, shared
    return (src.get(f"{PREFIX}encoder.embed_tokens.weight", shared),
            src.get(f"{PREFIX}decoder.embed_tokens.weight", shared))


def state_dict_from_hf(sd: Mapping[str, torch.Tensor], cfg: ModelConfig) -> Tensors:
    """MarianMTModel state dict -> Seq2SeqLM's. With sinusoidal positions the residual
    channels are put in lmforge's order (the module docstring says why)."""
    src = _hf_names(sd)
    index = torch.argsort(marian_order(cfg.d_model)) if cfg.positional == "sinusoidal" else None
    out = {ours: _reorder(take(src, PREFIX + hf), axis, index) for hf, ours, axis in _pairs(cfg)}
    enc, dec = _embeddings(src, cfg)
    out["encoder.embed.weight"] = _reorder(enc, "in", index)  # (V, C)
    if not cfg.share_embeddings:
        out["decoder.embed.weight"] = _reorder(dec, "in", index)
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = _reorder(take(src, "lm_head.weight"), "in", index)
    bias = src.get("final_logits_bias")  # (1, V); transformers fills a missing one with zeros
    out["lm_head.bias"] = (bias.reshape(-1) if bias is not None
                           else enc.new_zeros(cfg.vocab_size)).contiguous()
    if cfg.positional == "learned":
        for side in ("encoder", "decoder"):
            out[f"{side}.pos.weight"] = take(src, f"{PREFIX}{side}.embed_positions.weight").contiguous()
    return out


def state_dict_to_hf(sd: Mapping[str, torch.Tensor], cfg: ModelConfig) -> Tensors:
    """Seq2SeqLM state dict -> MarianMTModel's (HF names; with tied embeddings the table once,
    as transformers saves it). Sinusoidal positions are left out (transformers computes
    Marian's table); learned ones are written as the position tables, which transformers loads
    as they are."""
    index = marian_order(cfg.d_model) if cfg.positional == "sinusoidal" else None
    out = {PREFIX + hf: _reorder(take(sd, ours), axis, index) for hf, ours, axis in _pairs(cfg)}
    enc = _reorder(take(sd, "encoder.embed.weight"), "in", index)
    out[f"{PREFIX}shared.weight"] = enc
    if not cfg.tie_embeddings:  # transformers 5 then reads each side's own table
        dec = enc if cfg.share_embeddings else _reorder(take(sd, "decoder.embed.weight"), "in", index)
        out[f"{PREFIX}encoder.embed_tokens.weight"] = enc
        out[f"{PREFIX}decoder.embed_tokens.weight"] = dec
        out["lm_head.weight"] = _reorder(take(sd, "lm_head.weight"), "in", index)
    bias = sd.get("lm_head.bias")
    out["final_logits_bias"] = (bias if bias is not None else enc.new_zeros(cfg.vocab_size)
                                ).reshape(1, -1).contiguous()
    if cfg.positional == "learned":
        for side in ("encoder", "decoder"):
            out[f"{PREFIX}{side}.embed_positions.weight"] = take(sd, f"{side}.pos.weight").contiguous()
    return out


def _fit_checkpoint(weights: dict[str, torch.Tensor], cfg: ModelConfig) -> ModelConfig:
    """The config for what the checkpoint holds: positions ``learned`` when it stores a table
    other than Marian's (else ``sinusoidal``, the tables dropped), separate encoder and decoder
    tables when untied ones differ. Copies of tied tables (transformers ties them on load)
    are removed from ``weights``."""
    if cfg.tie_embeddings:
        for name in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
            copy = weights.pop(PREFIX + name, None)
            if copy is not None:
                weights.setdefault(f"{PREFIX}shared.weight", copy)
        weights.pop("lm_head.weight", None)
        share = True
    else:
        enc, dec = _embeddings(weights, cfg)
        share = enc is dec or torch.equal(enc, dec)
    tables = {side: weights.get(f"{PREFIX}{side}.embed_positions.weight")
              for side in ("encoder", "decoder")}
    ref = marian_positions(cfg.context_length, cfg.d_model)  # (L, C)
    if all(t is None or (t.shape == ref.shape and torch.allclose(t.float(), ref, atol=1e-5))
           for t in tables.values()):
        for side in tables:
            weights.pop(f"{PREFIX}{side}.embed_positions.weight", None)
        return replace(cfg, positional="sinusoidal", share_embeddings=share)
    for side, t in tables.items():
        if t is None:
            weights[f"{PREFIX}{side}.embed_positions.weight"] = ref
        elif t.shape != ref.shape:
            raise CheckpointError(f"model.{side}.embed_positions.weight has shape "
                                  f"{tuple(t.shape)}; the config needs {tuple(ref.shape)}")
    return replace(cfg, positional="learned", share_embeddings=share)


def read_tokenizer(src: Path):
    """tokenizer.json, or Marian's SentencePiece files (source.spm + vocab.json) rebuilt with
    the ids MarianTokenizer gives (lmforge/tokenizers/sentencepiece.py)."""
    if not (src / "tokenizer.json").is_file() and not (
            (src / "source.spm").is_file() and (src / "vocab.json").is_file()):
        raise TokenizerError(f"{src} has no tokenizer.json and no source.spm + vocab.json "
                             "(Marian's SentencePiece tokenizer); put either in the directory")
    return read_hf_tokenizer(src)


def seq2seq_token_names(tokenizer, hf: dict, where: str) -> dict[str, str]:
    """meta.json's ``seq2seq_tokens``: the decoder's start token (Marian starts from <pad>),
    the end token and the padding token, by name, from config.json's ids."""
    ids = {"pad": hf.get("pad_token_id"), "eos": hf.get("eos_token_id")}
    ids["start"] = hf.get("decoder_start_token_id", ids["pad"])
    out = {}
    for key, i in ids.items():
        i = i[0] if isinstance(i, list) and i else i
        name = tokenizer.id_to_token(i) if isinstance(i, int) else None
        if name is None or tokenizer.token_to_id(name) != i:
            raise TokenizerError(f"{where}: {_TOKENS[key]} = {i!r} is not a token of the "
                                 "tokenizer; is tokenizer.json the model's?")
        out[key] = name
    return out


def import_dir(src: Path, out: Path, dtype: str | None = None) -> Path:
    """Convert a MarianMT directory (config.json, weights, tokenizer.json) into an lmforge
    model directory; meta.json records the source and the ``seq2seq_tokens``."""
    src = Path(src)
    where = str(src)
    hf = read_hf_config(src)
    cfg = config_from_hf(hf)  # refuse an unsupported option before reading anything else
    tokenizer = read_tokenizer(src)
    check_vocab(tokenizer, cfg, str(src / "tokenizer.json"))
    tokens = seq2seq_token_names(tokenizer, hf, str(src / "config.json"))
    weights = _hf_names(read_hf_weights(src))
    cfg = _fit_checkpoint(weights, cfg)
    tensors = state_dict_from_hf(weights, cfg)
    unused = unused_tensors(weights, state_dict_to_hf(tensors, cfg), FAMILY, cfg)
    if unused:
        more = ", ..." if len(unused) > 5 else ""
        raise CheckpointError(f"{where}: the checkpoint has tensors a plain MarianMTModel does "
                              f"not have ({', '.join(unused[:5])}{more}); this variant is not "
                              "supported")
    check_tensors(cfg, tensors, where)
    tensors = own_storage(cast_tensors(tensors, dtype))
    source = Source(kind="imported", format="huggingface", path=str(src.resolve()),
                    special_tokens=special_tokens(src), family=NAME,
                    model_type=hf.get("model_type"), dtype=dtype_name(tensors), config=hf)
    meta = ModelMeta(task="import", source=source, seq2seq_tokens=Seq2SeqTokenNames(**tokens),
                     parameters=sum(t.numel() for t in tensors.values()))
    return write_model_dir(out, cfg, tensors, tokenizer, meta)


FAMILY = Family(name=NAME, model_types=(NAME,), architecture="MarianMTModel", prefix=PREFIX,
                config_from_hf=config_from_hf, config_to_hf=config_to_hf,
                state_from_hf=state_dict_from_hf, state_to_hf=state_dict_to_hf,
                export_problems=export_problems, import_dir=import_dir)
