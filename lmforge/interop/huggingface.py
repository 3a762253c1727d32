"""Hugging Face checkpoints in and out for decoder models.

    import_hf(SRC, OUT)   HF model directory (GPT-2, Llama, Mistral, Qwen2, Qwen3, Gemma,
                          MarianMT, T5, BART; BERT through lmforge.interop.hf.bert) -> lmforge model dir
    export_hf(DIR, OUT)   lmforge model directory -> a directory ``transformers`` loads with
                          AutoModelForCausalLM.from_pretrained (as GPT-2, Llama, Mistral,
                          Qwen3 or Gemma), or for an encoder–decoder AutoModelForSeq2SeqLM
                          (as MarianMT, T5 or BART)

Both give the same logits as the source. The per-family work (config fields, tensor names)
lives in ``lmforge.interop.hf``; this module reads, checks and writes the files.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
from tokenizers import processors

from ..config import to_dict
from ..errors import ConfigError
from ..files.atomic import atomic_write, atomic_write_text
from ..files.safetensors import save_safetensors
from ..modeldir.directory import (
    check_tensors,
    check_vocab,
    load_tokenizer_file,
    read_config,
    read_meta,
    read_weights,
    write_model_dir,
)
from ..modeldir.meta import Generation, ModelMeta, Seq2SeqTokenNames, Source
from ..models import ModelConfig
from ..tokenizers import eos_token_id
from ..tokenizers.special import require_tokens
from .hf import family_for_config, family_for_model_type
from .hf.base import converted_tensors, dtype_name, own_storage
from .hf.files import (
    generation_settings,
    read_hf_config,
    read_hf_tokenizer,
    read_hf_weights,
    special_tokens,
)

_TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")


def write_imported(hf: dict, weights: dict[str, torch.Tensor], tokenizer, out_dir: str | Path,
                   dtype: str | None, source: Source, generation: Generation | None = None) -> Path:
    """Convert an HF-style config and HF-named tensors (from a Hugging Face directory or a
    GGUF file) with the family of ``hf["model_type"]``, check them, and write the model
    directory; meta.json records ``source`` (format, path, ...; the family, model_type, dtype
    and ``hf`` are filled in) and ``generation`` (BOS/EOS ids, chat template, sampling
    defaults; stop ids outside the vocabulary left out)."""
    where = source.path or "the checkpoint"
    family = family_for_model_type(hf.get("model_type"), where)
    cfg = family.config_from_hf(hf)
    check_vocab(tokenizer, cfg, where)
    tensors = converted_tensors(family, weights, cfg, where, dtype)
    source = replace(source, kind="imported", family=family.name, config=hf,
                     model_type=hf.get("model_type"), dtype=dtype_name(tensors))
    if generation is not None and generation.eos_token_ids is not None:
        stops = [i for i in generation.eos_token_ids if 0 <= i < cfg.vocab_size]
        generation = replace(generation, eos_token_ids=stops)
    meta = ModelMeta(task="import", source=source, generation=generation,
                     parameters=sum(t.numel() for t in tensors.values()))
    return write_model_dir(out_dir, cfg, tensors, tokenizer, meta)


def import_hf(src_dir: str | Path, out_dir: str | Path, dtype: str | None = None) -> Path:
    """Convert a Hugging Face model directory (config.json, safetensors or pytorch_model.bin
    weights, possibly sharded, and a tokenizer) into an lmforge model directory. ``dtype``
    (float32, bfloat16, float16) casts the weights; None keeps the checkpoint's."""
    src = Path(src_dir)
    hf = read_hf_config(src)
    family = family_for_model_type(hf.get("model_type"), str(src / "config.json"))
    if family.import_dir is not None:  # BERT: the family converts the directory itself
        return family.import_dir(src, Path(out_dir), dtype)
    family.config_from_hf(hf)  # refuse an unsupported option before reading the weights
    tokenizer = read_hf_tokenizer(src)
    source = Source(kind="imported", format="huggingface", path=str(src.resolve()),
                    special_tokens=special_tokens(src))
    return write_imported(hf, read_hf_weights(src), tokenizer, out_dir, dtype, source,
                          generation=generation_settings(src, hf, tokenizer))


def _token_ids(tokenizer, source: Source) -> dict[str, int]:
    """bos/eos/pad ids: the original HF config's, else the tokenizer's end-of-text token."""
    original = source.config or {}
    ids = {k: original[k] for k in _TOKEN_IDS if original.get(k) is not None}
    eos = eos_token_id(tokenizer)
    if "eos_token_id" not in ids and eos is not None:
        ids |= {"bos_token_id": ids.get("bos_token_id", eos), "eos_token_id": eos}
    return ids


def _seq2seq_token_ids(tokenizer, meta: ModelMeta) -> dict[str, int]:
    """An encoder–decoder's pad, end and decoder-start ids (meta.json's ``seq2seq_tokens``)."""
    names = meta.seq2seq_tokens or Seq2SeqTokenNames()
    ids = require_tokens(tokenizer, to_dict(names), "an encoder–decoder model")
    return {"pad_token_id": ids["pad"], "eos_token_id": ids["eos"],
            "decoder_start_token_id": ids["start"]}


def _end_with_eos(tokenizer, eos: str, eos_id: int) -> None:
    """Make ``tokenizer`` append the end token when it adds no special tokens (no
    post-processor, or a template without special tokens, as transformers 5 saves one)."""
    post = json.loads(tokenizer.to_str()).get("post_processor")
    if post is None or (post.get("type") == "TemplateProcessing" and not post.get("special_tokens")):
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"$A {eos}", pair=f"$A $B {eos}", special_tokens=[(eos, eos_id)])


def _tokenizer_config(tokenizer, cfg: ModelConfig, source: Source) -> dict:
    specials = dict(source.special_tokens or {})
    eos = eos_token_id(tokenizer)
    if "eos_token" not in specials and eos is not None:
        specials["eos_token"] = tokenizer.id_to_token(eos)
    return {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": cfg.context_length,
            "clean_up_tokenization_spaces": False, **specials}


def _generation_config(gen: Generation | None) -> dict | None:
    """generation_config.json from meta.json's ``generation`` record (None: nothing recorded):
    the stop, BOS and pad ids and the model's sampling defaults, as imported."""
    if gen is None:
        return None
    out = {"bos_token_id": gen.bos_token_id, "eos_token_id": gen.eos_token_ids,
           "pad_token_id": gen.pad_token_id, "do_sample": gen.do_sample,
           "temperature": gen.temperature, "top_k": gen.top_k, "top_p": gen.top_p,
           "repetition_penalty": gen.repetition_penalty}
    return {k: v for k, v in out.items() if v is not None}


def export_hf(model_dir: str | Path, out_dir: str | Path) -> Path:
    """Write lmforge model directory ``model_dir`` as a Hugging Face model directory:
    config.json, model.safetensors (HF tensor names), tokenizer.json, tokenizer_config.json.
    GPT-2-like configs become GPT2LMHeadModel, Llama-like ones LlamaForCausalLM; any other
    config is refused with the fields that prevent it. Encoder–decoders (``arch = "seq2seq"``)
    become MarianMTModel, with the pad, end and decoder-start ids of meta.json's
    ``seq2seq_tokens``. meta.json's ``generation`` record (an imported or averaged model's)
    becomes generation_config.json and the chat template in tokenizer_config.json."""
    path, out = Path(model_dir), Path(out_dir)
    cfg = read_config(path)
    tokenizer = load_tokenizer_file(path)
    tensors = read_weights(path)
    check_tensors(cfg, tensors, str(path))
    meta = read_meta(path)
    source = meta.imported_source() or Source()
    try:
        family = family_for_config(cfg, prefer=source.family)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    hf_tensors = own_storage(family.state_to_hf(tensors, cfg))
    seq2seq = cfg.arch == "seq2seq"
    ids = _seq2seq_token_ids(tokenizer, meta) if seq2seq else _token_ids(tokenizer, source)
    config = {"architectures": [family.architecture], "model_type": family.name,
              **family.config_to_hf(cfg), **ids, "dtype": dtype_name(hf_tensors)}
    tokenizer_config = _tokenizer_config(tokenizer, cfg, source)
    if meta.generation is not None and meta.generation.chat_template:
        tokenizer_config["chat_template"] = meta.generation.chat_template
    generation_config = _generation_config(meta.generation)
    if seq2seq:  # transformers' tokenizer(text) ends a source with </s>, as Marian's does
        tokenizer_config |= {k: tokenizer.id_to_token(ids[f"{k}_id"])
                             for k in ("eos_token", "pad_token")}
        _end_with_eos(tokenizer, tokenizer_config["eos_token"], ids["eos_token_id"])
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "model.safetensors",
                 lambda p: save_safetensors(hf_tensors, p))
    atomic_write_text(out / "config.json", json.dumps(config, indent=2) + "\n")
    atomic_write_text(out / "tokenizer.json", tokenizer.to_str(pretty=True))
    atomic_write_text(out / "tokenizer_config.json", json.dumps(tokenizer_config, indent=2) + "\n")
    if generation_config:
        atomic_write_text(out / "generation_config.json",
                          json.dumps(generation_config, indent=2) + "\n")
    return out
