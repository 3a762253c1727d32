"""Reading a Hugging Face model directory: config.json, the weights (one safetensors file,
sharded safetensors with an index, or pytorch_model.bin) and the tokenizer (tokenizer.json, or
a GPT-2 style vocab.json + merges.txt turned into a byte-level BPE ``tokenizers`` tokenizer, or a
SentencePiece model: Llama's tokenizer.model, T5's spiece.model, Marian's source.spm, or BERT's
WordPiece vocab.txt)."""

from __future__ import annotations

import json
import pickle
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from ...errors import CheckpointError, ConfigError, TokenizerError
from ...modeldir.meta import Generation
from ...tokenizers.wordpiece import read_vocab_txt, wordpiece_tokenizer
from ...tokenizers.sentencepiece import (
    llama_tokenizer,
    marian_tokenizer,
    read_spm,
    t5_tokenizer,
)
from .bounds import check_hf_sizes, shard_paths

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "cls_token", "sep_token",
                "mask_token")
BYTE_ALPHABET = frozenset(pre_tokenizers.ByteLevel.alphabet())
"""The 256 characters byte-level BPE spells bytes with."""


def read_json(path: Path) -> dict:
    """A JSON file holding an object; anything else is one ConfigError naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        why = " ".join(str(e).split())[:200] or type(e).__name__
        raise ConfigError(f"{path} cannot be read as JSON ({why})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object, not {type(data).__name__}")
    return data


def read_hf_config(src: Path) -> dict:
    if not src.is_dir():
        raise CheckpointError(f"{str(src)!r} is not a directory; give a Hugging Face model "
                              "directory (config.json + weights + tokenizer)")
    if not (src / "config.json").is_file():
        raise CheckpointError(f"{src} has no config.json; it is not a Hugging Face model directory")
    hf = read_json(src / "config.json")
    check_hf_sizes(hf, src / "config.json")  # before anything is built from the sizes
    return hf


def _load_one(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, OSError, RuntimeError, ValueError, pickle.UnpicklingError) as e:
        raise CheckpointError(f"{path} cannot be read ({e}); the file is corrupt or "
                              "truncated") from None


def read_hf_weights(src: Path) -> dict[str, torch.Tensor]:
    """All tensors of the checkpoint by HF name, shards merged."""
    for name in WEIGHT_FILES:
        path = src / name
        if not path.is_file():
            continue
        if not name.endswith(".index.json"):
            return _load_one(path)
        out: dict[str, torch.Tensor] = {}
        for shard in shard_paths(read_json(path), path):  # plain names inside src only
            out.update(_load_one(shard))
        return out
    raise CheckpointError(f"{src} has no weights; looked for {', '.join(WEIGHT_FILES)}")


def special_tokens(src: Path) -> dict[str, str]:
    """{"eos_token": "</s>", ...} from tokenizer_config.json / special_tokens_map.json."""
    found: dict[str, str] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        if (src / name).is_file():
            data = read_json(src / name)
            for key in SPECIAL_KEYS:
                value = data.get(key)
                value = value.get("content") if isinstance(value, dict) else value
                if isinstance(value, str):
                    found.setdefault(key, value)
    return found


def byte_level_bpe(bpe: models.BPE, specials: list[str],
                   split: str | Sequence[str | None] | None = None) -> Tokenizer:
    """A byte-level BPE tokenizer as ``transformers`` builds GPT-2's: words split by GPT-2's
    regex (or by the regex ``split``, as Llama 3 and Qwen2 do), then mapped to bytes.
    ``split`` may also be several regexes applied in turn, the last one None for GPT-2's
    (SmolLM/StarCoder: each digit on its own, then GPT-2's split).
    ``specials`` that are in the vocabulary become special tokens."""
    tok = Tokenizer(bpe)
    splits = [split] if split is None or isinstance(split, str) else list(split)
    if any(s is None for s in splits[:-1]):
        raise ValueError("only the last split regex may be None (GPT-2's)")
    steps = [pre_tokenizers.Split(Regex(s), behavior="isolated") for s in splits if s is not None]
    gpt2 = splits[-1] is None
    if not steps:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [*steps, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=gpt2)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    known = tok.get_vocab()
    tok.add_special_tokens([s for s in dict.fromkeys(specials) if s in known])
    return tok


def read_hf_tokenizer(src: Path) -> Tokenizer:
    if (src / "tokenizer.json").is_file():
        try:
            return Tokenizer.from_file(str(src / "tokenizer.json"))
        except Exception as e:  # the Rust parser raises plain Exception
            raise TokenizerError(f"{src / 'tokenizer.json'} cannot be read ({e})") from None
    vocab, merges = src / "vocab.json", src / "merges.txt"
    if vocab.is_file() and merges.is_file():
        specials = [*special_tokens(src).values(), "<|endoftext|>"]
        try:
            return byte_level_bpe(models.BPE.from_file(str(vocab), str(merges)), specials)
        except Exception as e:
            raise TokenizerError(f"cannot build a BPE tokenizer from {vocab} and {merges} "
                                 f"({e})") from None
    spm = read_spm_tokenizer(src)
    if spm is not None:
        return spm
    if (src / "vocab.txt").is_file():
        return read_wordpiece(src)
    raise TokenizerError(
        f"{src} has no tokenizer.json, no vocab.json + merges.txt, no SentencePiece model "
        "(tokenizer.model, spiece.model, or Marian's source.spm + vocab.json) and no vocab.txt "
        "(WordPiece); save the "
        "tokenizer with transformers' AutoTokenizer.from_pretrained(SRC).save_pretrained(SRC)")


def read_wordpiece(src: Path) -> Tokenizer:
    """BERT's ``vocab.txt`` with tokenizer_config.json's ``do_lower_case`` (default true),
    ``strip_accents`` and ``tokenize_chinese_chars``, as BertTokenizerFast reads them."""
    config = read_json(src / "tokenizer_config.json") if (src / "tokenizer_config.json"
                                                           ).is_file() else {}
    named = special_tokens(src)
    accents = config.get("strip_accents")
    return wordpiece_tokenizer(
        read_vocab_txt(src / "vocab.txt"), lowercase=_flag(config, "do_lower_case", True),
        strip_accents=accents if isinstance(accents, bool) else None,
        chinese_chars=_flag(config, "tokenize_chinese_chars", True),
        unk=named.get("unk_token", "[UNK]"), cls=named.get("cls_token", "[CLS]"),
        sep=named.get("sep_token", "[SEP]"),
        specials=[named.get("pad_token", "[PAD]"), named.get("mask_token", "[MASK]"),
                  *named.values()])


def _flag(config: dict, key: str, default: bool) -> bool:
    value = config.get(key, default)
    return value if isinstance(value, bool) else default


def read_spm_tokenizer(src: Path) -> Tokenizer | None:
    """A SentencePiece tokenizer as transformers builds it from the same files
    (lmforge/tokenizers/sentencepiece.py): Marian's source.spm + vocab.json, or a
    tokenizer.model / spiece.model read as T5Tokenizer (tokenizer_config.json's tokenizer_class
    names T5, or the file is spiece.model) or LlamaTokenizer. None when there is none."""
    config = read_json(src / "tokenizer_config.json") if (src / "tokenizer_config.json"
                                                           ).is_file() else {}
    named = special_tokens(src)
    specials = list(named.values())
    if (src / "source.spm").is_file() and (src / "vocab.json").is_file():
        vocab = read_json(src / "vocab.json")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in vocab.values()):
            raise TokenizerError(f"{src / 'vocab.json'} must map each piece to an integer id")
        specials += [named.get("unk_token", "<unk>"), named.get("pad_token", "<pad>")]
        return marian_tokenizer(read_spm(src / "source.spm"), vocab, specials=specials,
                                eos=named.get("eos_token", "</s>"), where=str(src / "source.spm"))
    path = next((src / n for n in ("tokenizer.model", "spiece.model") if (src / n).is_file()),
                None)
    if path is None:
        return None
    model, kind = read_spm(path), str(config.get("tokenizer_class") or "")
    if "T5" in kind or (not kind and path.name == "spiece.model"):
        extra = config.get("extra_ids", 100)
        extra = extra if isinstance(extra, int) and 0 <= extra <= 10_000 else 100
        return t5_tokenizer(model, extra_ids=extra, specials=specials,
                            eos=named.get("eos_token", "</s>"))
    if kind and "Llama" not in kind:
        raise TokenizerError(f"{src / 'tokenizer_config.json'}: tokenizer_class {kind!r} over "
                             f"{path.name} is not supported (LlamaTokenizer, T5Tokenizer and "
                             "Marian are); save a tokenizer.json with transformers")
    if model.unigram:
        raise TokenizerError(f"{path} is a Unigram SentencePiece model, which transformers' "
                             "LlamaTokenizer reads as BPE (different ids); save a "
                             "tokenizer.json with transformers")
    bos, eos = named.get("bos_token", "<s>"), named.get("eos_token", "</s>")
    return llama_tokenizer(model, bos=bos if _flag(config, "add_bos_token", False) else None,
                           eos=eos if _flag(config, "add_eos_token", False) else None,
                           specials=specials, legacy=_flag(config, "legacy", False),
                           add_prefix_space=_flag(config, "add_prefix_space", True))


def _ids(value) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    return [v for v in value if isinstance(v, int)] if isinstance(value, list) else []


def chat_template(src: Path) -> str | None:
    """The chat template: tokenizer_config.json's ``chat_template`` (a string, or named
    templates of which ``default`` is taken), else chat_template.jinja / chat_template.json."""
    if (src / "tokenizer_config.json").is_file():
        value = read_json(src / "tokenizer_config.json").get("chat_template")
        if isinstance(value, list):  # [{"name": "default", "template": ...}, ...]
            named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
            value = named.get("default") or next(iter(named.values()), None)
        if isinstance(value, str):
            return value
    if (src / "chat_template.jinja").is_file():
        return (src / "chat_template.jinja").read_text(encoding="utf-8")
    if (src / "chat_template.json").is_file():
        value = read_json(src / "chat_template.json").get("chat_template")
        return value if isinstance(value, str) else None
    return None


SAMPLING_KEYS = {"temperature": float, "top_k": int, "top_p": float, "repetition_penalty": float,
                 "do_sample": bool}
"""generation_config.json's sampling defaults that meta.json's ``generation`` records."""


def sampling_defaults(gen: dict) -> dict:
    """The model's recommended sampling settings in a generation_config.json (those of the
    right type; a value of another type is left out)."""
    out = {}
    for key, kind in SAMPLING_KEYS.items():
        value = gen.get(key)
        if isinstance(value, bool) != (kind is bool):
            continue
        if isinstance(value, kind) or (kind is float and isinstance(value, int)):
            out[key] = kind(value)
    return out


def generation_settings(src: Path, hf: dict, tokenizer: Tokenizer) -> Generation:
    """meta.json's ``generation`` record for a Hugging Face directory: BOS id, the ids that end
    generation (generation_config.json's eos_token_id, which may be a list, config.json's,
    and the tokenizer's eos_token), the chat template and generation_config.json's sampling
    defaults (temperature, top_k, top_p, repetition_penalty, do_sample)."""
    f = src / "generation_config.json"
    gen = read_json(f) if f.is_file() else {}
    named = special_tokens(src)
    by_name = {k: tokenizer.token_to_id(v) for k, v in named.items()}
    eos = (_ids(gen.get("eos_token_id")) + _ids(hf.get("eos_token_id"))
           + _ids(by_name.get("eos_token")))
    bos = (_ids(gen.get("bos_token_id")) + _ids(hf.get("bos_token_id"))
           + _ids(by_name.get("bos_token")) or [None])[0]
    pad = (_ids(gen.get("pad_token_id")) + _ids(hf.get("pad_token_id")) + [None])[0]
    return Generation(bos_token_id=bos, eos_token_ids=list(dict.fromkeys(eos)) or None,
                      pad_token_id=pad, chat_template=chat_template(src),
                      **sampling_defaults(gen if isinstance(gen, dict) else {}))
