"""Hugging Face BERT (``BertModel``, ``BertForPreTraining``, ``BertForMaskedLM``; also
sentence-transformers' MiniLM/BERT folders) -> lmforge encoder (``arch = "encoder"``); also
the ``bert`` family of the registry (import only: :func:`import_bert_dir` converts the whole
directory, as sentence-transformers folders need their pooling recorded).

BERT fuses nothing: each projection is its own ``nn.Linear`` (out, in), as in lmforge, so
weights are renamed, not reshaped:

    embeddings.{word,position,token_type}_embeddings   encoder.backbone.{embed,pos,token_type}
    embeddings.LayerNorm                               encoder.backbone.embed_norm
    encoder.layer.i.attention.self.{query,key,value}   encoder.backbone.layers.i.attn.{q,k,v}_proj
    encoder.layer.i.attention.output.dense / LayerNorm ....attn.o_proj / norm1   (post-norm)
    encoder.layer.i.intermediate.dense / output.dense  ....ff.up_proj / ff.down_proj
    encoder.layer.i.output.LayerNorm                   ....norm2
    pooler.dense                                       encoder.pooler.dense
    cls.predictions.transform.{dense,LayerNorm}        mlm.{dense,norm}
    cls.predictions.{decoder.weight,bias}              mlm.decoder.{weight,bias} (weight tied)
    cls.seq_relationship                               nsp.classifier
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ...errors import CheckpointError, ConfigError
from ...modeldir.directory import DTYPES, check_vocab, save_model_dir
from ...modeldir.meta import ModelMeta, SentenceEmbedding, Source
from ...models import ModelConfig, build_model
from ...tokenizers import load_tokenizer
from .base import ACTIVATIONS, Family, Tensors


_LAYER = r"encoder\.layer\.(\d+)\."
_OURS = r"encoder.backbone.layers.\1."
_RULES: list[tuple[re.Pattern, str]] = [(re.compile(a), b) for a, b in [
    (r"embeddings\.word_embeddings\.weight", "encoder.backbone.embed.weight"),
    (r"embeddings\.position_embeddings\.weight", "encoder.backbone.pos.weight"),
    (r"embeddings\.token_type_embeddings\.weight", "encoder.backbone.token_type.weight"),
    (r"embeddings\.LayerNorm\.(weight|bias)", r"encoder.backbone.embed_norm.\1"),
    (_LAYER + r"attention\.self\.query\.(weight|bias)", _OURS + r"attn.q_proj.\2"),
    (_LAYER + r"attention\.self\.key\.(weight|bias)", _OURS + r"attn.k_proj.\2"),
    (_LAYER + r"attention\.self\.value\.(weight|bias)", _OURS + r"attn.v_proj.\2"),
    (_LAYER + r"attention\.output\.dense\.(weight|bias)", _OURS + r"attn.o_proj.\2"),
    (_LAYER + r"attention\.output\.LayerNorm\.(weight|bias)", _OURS + r"norm1.\2"),
    (_LAYER + r"intermediate\.dense\.(weight|bias)", _OURS + r"ff.up_proj.\2"),
    (_LAYER + r"output\.dense\.(weight|bias)", _OURS + r"ff.down_proj.\2"),
    (_LAYER + r"output\.LayerNorm\.(weight|bias)", _OURS + r"norm2.\2"),
    (r"pooler\.dense\.(weight|bias)", r"encoder.pooler.dense.\1"),
    (r"cls\.predictions\.transform\.dense\.(weight|bias)", r"mlm.dense.\1"),
    (r"cls\.predictions\.transform\.LayerNorm\.(weight|bias)", r"mlm.norm.\1"),
    (r"cls\.predictions\.(?:decoder\.)?bias", "mlm.decoder.bias"),
    (r"cls\.predictions\.decoder\.weight", "mlm.decoder.weight"),
    (r"cls\.seq_relationship\.(weight|bias)", r"nsp.classifier.\1"),
]]
_IGNORED = re.compile(r"embeddings\.position_ids")  # a buffer, not a weight


def _hf_key(key: str) -> str:
    """Drop the ``bert.`` prefix; old TF-converted checkpoints name LayerNorm gamma/beta."""
    key = key.removeprefix("bert.")
    return re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key))


def bert_heads_from_state_dict(sd: dict[str, torch.Tensor]) -> tuple[str, bool]:
    """(model.heads, model.pooler) for the weights a BERT checkpoint holds."""
    keys = {_hf_key(k) for k in sd}
    pooler = "pooler.dense.weight" in keys
    mlm = "cls.predictions.transform.dense.weight" in keys
    nsp = "cls.seq_relationship.weight" in keys and pooler
    return ("mlm+nsp" if mlm and nsp else "mlm" if mlm else "none"), pooler


def bert_config_from_hf(hf: dict, *, heads: str = "none", pooler: bool = True) -> ModelConfig:
    """A ``transformers`` BertConfig (as a dict) -> the equivalent lmforge ModelConfig.
    ``heads``/``pooler`` say which heads the weights have (:func:`bert_heads_from_state_dict`)."""
    kind = hf.get("model_type", "bert")
    if kind != "bert":
        raise ConfigError(f"model_type {kind!r} is not BERT; this importer reads BERT checkpoints "
                          "(BertModel, BertForPreTraining, BertForMaskedLM, MiniLM)")
    pos = hf.get("position_embedding_type", "absolute")
    if pos != "absolute":
        raise ConfigError(f"position_embedding_type {pos!r} is not supported; only 'absolute'")
    act = hf.get("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        raise ConfigError(f"hidden_act {act!r} is not supported; one of {', '.join(ACTIVATIONS)}")
    missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                           "intermediate_size") if k not in hf]
    if missing:
        raise ConfigError(f"the BERT config lacks {', '.join(missing)}")
    return ModelConfig(
        arch="encoder", vocab_size=hf["vocab_size"],
        context_length=hf.get("max_position_embeddings", 512), d_model=hf["hidden_size"],
        n_layer=hf["num_hidden_layers"], n_head=hf["num_attention_heads"],
        d_ff=hf["intermediate_size"], activation=ACTIVATIONS[act], norm="layernorm",
        norm_eps=hf.get("layer_norm_eps", 1e-12), prenorm=False, positional="learned", bias=True,
        tie_embeddings=hf.get("tie_word_embeddings", True),
        dropout=hf.get("hidden_dropout_prob", 0.1), init_std=hf.get("initializer_range", 0.02),
        type_vocab_size=hf.get("type_vocab_size", 2), embed_norm=True, heads=heads, pooler=pooler)


def bert_state_dict_from_hf(sd: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """BERT state dict (keys with or without ``bert.``) -> MaskedLM state dict for ``cfg``.
    Weights of heads ``cfg`` does not have are dropped; unknown keys raise CheckpointError."""
    wanted = {"encoder.pooler.": cfg.pooler, "mlm.": "mlm" in cfg.heads, "nsp.": "nsp" in cfg.heads}
    hf = {_hf_key(k): t for k, t in sd.items()}
    if "cls.predictions.decoder.bias" in hf:  # the bias the decoder adds (normally tied to this)
        hf.pop("cls.predictions.bias", None)
    out, unknown = {}, []
    for key, t in hf.items():
        if _IGNORED.fullmatch(key):
            continue
        for pat, repl in _RULES:
            if pat.fullmatch(key):
                ours = pat.sub(repl, key)
                break
        else:
            unknown.append(key)
            continue
        if all(keep for prefix, keep in wanted.items() if ours.startswith(prefix)):
            out[ours] = t.contiguous()
    if unknown:
        raise CheckpointError(f"{len(unknown)} weight(s) are not part of a BERT checkpoint: "
                              f"{', '.join(unknown[:5])}")
    if "mlm" in cfg.heads:
        if cfg.tie_embeddings:
            out.pop("mlm.decoder.weight", None)  # the word embeddings, stored once
        else:
            out.setdefault("mlm.decoder.weight", out["encoder.backbone.embed.weight"])
    return out


def _read_weights(src: Path) -> dict[str, torch.Tensor]:
    st, pt = src / "model.safetensors", src / "pytorch_model.bin"
    try:
        if st.is_file():
            return load_file(str(st))
        if pt.is_file():
            return torch.load(pt, map_location="cpu", weights_only=True)
    except (SafetensorError, OSError, RuntimeError, ValueError, pickle.UnpicklingError) as e:
        raise CheckpointError(f"cannot read the weights in {src} ({e}); the file is corrupt") from None
    raise CheckpointError(f"{src} has no model.safetensors (or pytorch_model.bin)")


def _normalizes(root: Path) -> bool:
    """Whether a sentence-transformers folder L2-normalises its embeddings (modules.json)."""
    try:
        modules = json.loads((root / "modules.json").read_text(encoding="utf-8"))
        return any(str(m.get("type", "")).endswith(".Normalize") for m in modules)
    except (OSError, json.JSONDecodeError, AttributeError):
        return (root / "2_Normalize").is_dir()


def _sentence_embedding(src: Path) -> SentenceEmbedding | None:
    """sentence-transformers folders say how they pool (1_Pooling/config.json) and whether
    they normalise; these files sit in ``src`` or its parent."""
    for root in (src, src.parent):
        f = root / "1_Pooling" / "config.json"
        if f.is_file():
            try:
                pooling = json.loads(f.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                return None
            keys = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens",
                    "max": "pooling_mode_max_tokens"}
            modes = [mode for mode, k in keys.items() if pooling.get(k)]
            return SentenceEmbedding(pooling=modes[0] if modes else None,
                                     normalize=_normalizes(root))
    return None


def import_bert_dir(src: str | Path, out: str | Path, dtype: str | None = None) -> Path:
    """Convert a Hugging Face BERT folder (config.json, model.safetensors or pytorch_model.bin,
    tokenizer.json) into an lmforge model directory at ``out``; returns ``out``. ``dtype``
    (float32, bfloat16, float16) casts the weights. ``lmforge import`` calls this for
    ``model_type = "bert"`` (through the family registry, ``lmforge.interop.hf``)."""
    src = Path(src)
    f = src / "config.json"
    if not f.is_file():
        raise CheckpointError(f"{f} is missing: {src} is not a Hugging Face model folder")
    try:
        hf = json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{f} is not valid JSON ({e})") from None
    sd = _read_weights(src)
    heads, pooler = bert_heads_from_state_dict(sd)
    cfg = bert_config_from_hf(hf, heads=heads, pooler=pooler)
    tokenizer = load_tokenizer(src)
    check_vocab(tokenizer, cfg, str(src / "tokenizer.json"))
    model = build_model(cfg)
    missing, unexpected = model.load_state_dict(bert_state_dict_from_hf(sd, cfg), strict=False)
    missing = [k for k in missing if k not in model.tied_keys()]
    if missing or unexpected:
        raise CheckpointError(f"{src}: the weights do not match its config.json: missing "
                              f"{missing[:5]}, unexpected {unexpected[:5]}")
    if dtype is not None:
        if dtype not in DTYPES:
            raise ConfigError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
        model.to(DTYPES[dtype])
    architectures = hf.get("architectures")
    source = Source(kind="imported", format="hf-bert", path=str(src), family="bert",
                    model_type="bert", config=hf,
                    architectures=architectures if isinstance(architectures, list) else None,
                    dtype=str(next(model.parameters()).dtype).removeprefix("torch."))
    meta = ModelMeta(task="import", source=source, parameters=model.num_params(),
                     sentence_embedding=_sentence_embedding(src))
    return save_model_dir(out, model, tokenizer, meta)


def _state_from_hf(sd: Mapping[str, torch.Tensor], cfg: ModelConfig) -> Tensors:
    return bert_state_dict_from_hf(dict(sd), cfg)


def _no_export(*_args) -> dict:
    raise NotImplementedError("BERT models are imported, not exported")


FAMILY = Family(name="bert", model_types=("bert",), architecture="BertModel", prefix="bert.",
                config_from_hf=bert_config_from_hf, config_to_hf=_no_export,
                state_from_hf=_state_from_hf, state_to_hf=_no_export,
                export_problems=lambda cfg: ["BERT export is not supported"],
                import_dir=import_bert_dir, exports=False)
