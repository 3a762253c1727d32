"""The tokenizer a GGUF file describes, rebuilt as a ``tokenizers`` tokenizer that gives the same
ids as the model's own tokenizer.

Two vocabulary kinds (``tokenizer.ggml.model``):

- ``gpt2``: byte-level BPE. ``tokenizer.ggml.pre`` names how text is split into words before
  BPE; each known name maps to llama.cpp's list of split regexes (llama-vocab.cpp), applied in
  turn with every match and every gap kept (``Split(..., "isolated")`` in sequence). Where
  transformers' GGUF loader implements a type's split, its regex is used (the same split); for
  the types it leaves at GPT-2's split while llama.cpp does not (smollm, starcoder, deepseek-*,
  falcon, qwen2-style stablelm2, ...), llama.cpp's split is used, which is also what the
  model's original tokenizer.json does (SmolLM2: each digit on its own, then GPT-2's split).
  An unknown name is refused.
- ``llama``: a SentencePiece vocabulary (scores, ``<0xNN>`` byte tokens, the ``▁`` space
  marker), rebuilt exactly as transformers' LlamaTokenizer does: BPE with byte fallback and
  merges recovered from the scores, ``Metaspace`` adding one ``▁`` before the text (unless
  ``tokenizer.ggml.add_space_prefix`` is false).

Control tokens (token_type 3) become special tokens, user-defined ones (4) added tokens, both
matched whole in the text; ``add_bos_token``/``add_eos_token`` put BOS/EOS around each text.
"""

from __future__ import annotations

from typing import Any

from tokenizers import (
    AddedToken,
    Tokenizer,
    decoders,
    models,
    pre_tokenizers,
    processors,
)

from ..errors import TokenizerError
from ..tokenizers.sentencepiece import spm_merges
from .hf.files import BYTE_ALPHABET, byte_level_bpe

CONTROL, USER_DEFINED = 3, 4  # tokenizer.ggml.token_type values

_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
           r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_TEKKEN = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
           r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
           r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_CONTRACTION = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
_GPT4O = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
          + _CONTRACTION + r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+"
          r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]*" + _CONTRACTION
          + r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_CJK = "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"
_LATIN_LIKE = (  # deepseek-llm's letter class, as llama-vocab.cpp spells it
    "\\s?[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293"
    "\u0295-\u02af\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c"
    "\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5"
    "\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77"
    "\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59"
    "\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc"
    "\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107"
    "\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139"
    "\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee"
    "\u2cf2\u2cf3\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e"
    "\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f"
    "\U000104b0-\U000104d3\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2"
    "\U000118a0-\U000118df\U0001e900-\U0001e943]+")
_NO_WS_PUNCT = " ?[^(\\s|.,!?\u2026\u3002\uff0c\u3001\u0964\u06d4\u060c)]+"

PRE_SPLITS: dict[str, tuple[str, ...]] = {
    "gpt2": (_GPT2,),
    "llama3": (_LLAMA3,),
    "qwen2": (_QWEN2,),
    "tekken": (_TEKKEN,),
    "gpt-4o": (_GPT4O,),
    "starcoder": (r"\p{N}", _GPT2),  # each digit on its own, then GPT-2's split
    "falcon": (r"[\p{P}\$\+<=>\^~\|`]+", _GPT2, "[0-9][0-9][0-9]"),
    "deepseek-llm": ("[\r\n]", _LATIN_LIKE,
                     "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+",
                     r"\s+$", _CJK, r"\p{N}+"),
    "deepseek-coder": ("[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", _CJK, r"\p{N}"),
    "deepseek-v3": (r"\p{N}{1,3}", "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
                    ("[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+"
                    "|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*"
                    "|\\s*[\r\n]+|\\s+(?!\\S)|\\s+")),
    "bloom": (_NO_WS_PUNCT,),
    "viking": (_NO_WS_PUNCT, r"\p{N}"),
    "chameleon": ("<sentinel:[0-9]+>", "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z",
                  "([\\t\\n]|    |  )", r"\p{N}", r"[\p{P}!-/:-@\[-`{-~]", _GPT2),
}
"""Split kinds: the regexes applied in turn before byte-level BPE."""

_NAMES = {
    "gpt2": ("default", "gpt-2", "mpt", "olmo", "jais", "phi-2", "jina-es", "jina-de",
             "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0", "mellum", "jina-v1-en",
             "jina-v2-code", "roberta-bpe", "exaone4"),
    "llama3": ("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0",
               "lfm2", "jina-v5-nano", "dbrx", "smaug-bpe", "chatglm-bpe", "glm4"),
    "qwen2": ("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2"),
    "tekken": ("tekken",),
    "gpt-4o": ("gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"),
    "starcoder": ("starcoder", "refact", "command-r", "smollm", "codeshell", "exaone",
                  "minerva-7b"),
    "falcon": ("falcon",), "deepseek-llm": ("deepseek-llm",),
    "deepseek-coder": ("deepseek-coder",), "deepseek-v3": ("deepseek-v3",),
    "bloom": ("bloom", "poro-chat", "gpt3-finnish"), "viking": ("viking",),
    "chameleon": ("chameleon",),
}
PRE_TYPES: dict[str, str] = {name: kind for kind, names in _NAMES.items() for name in names}
"""``tokenizer.ggml.pre`` -> split kind (:data:`PRE_SPLITS`). "default" (and a file without the
key) is GPT-2's split, as transformers reads it."""
IGNORE_MERGES = {"llama3", "tekken"}  # llama.cpp takes a word that is a token whole


def pre_splits(pre: str | None) -> tuple[str, ...]:
    """The split regexes for a ``tokenizer.ggml.pre`` name; an unknown name is refused."""
    kind = PRE_TYPES.get("default" if pre is None else pre)
    if kind is None:
        raise TokenizerError(f"GGUF pre-tokenizer {pre!r} (tokenizer.ggml.pre) is not supported; "
                             f"known: {', '.join(sorted(PRE_TYPES))}")
    return PRE_SPLITS[kind]


def _bpe_gguf(meta: dict[str, Any]) -> Tokenizer:
    """Byte-level BPE with the file's pre-tokenizer split."""
    pre = meta.get("tokenizer.ggml.pre")
    splits, kind = pre_splits(pre), PRE_TYPES["default" if pre is None else pre]
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
    bpe = models.BPE({t: i for i, t in enumerate(tokens)}, merges,
                     ignore_merges=kind in IGNORE_MERGES)
    return byte_level_bpe(bpe, [], splits)


def _spm_gguf(meta: dict[str, Any]) -> Tokenizer:
    """A SentencePiece (``llama``) vocabulary as transformers' LlamaTokenizer builds it."""
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    scores = meta.get("tokenizer.ggml.scores")
    if not isinstance(scores, list) or len(scores) != len(tokens):
        raise TokenizerError("a SentencePiece GGUF vocabulary needs tokenizer.ggml.scores, one "
                             "score per token")
    merges = meta.get("tokenizer.ggml.merges")
    merges = ([tuple(m.split(" ")) for m in merges] if merges
              else spm_merges(tokens, [float(s) for s in scores]))
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges, fuse_unk=True,
                               byte_fallback=True))
    prefix = meta.get("tokenizer.ggml.add_space_prefix", True) is not False
    tok.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="\u2581", prepend_scheme="first" if prefix else "never", split=False)
    steps = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    tok.decoder = decoders.Sequence(steps + ([decoders.Strip(" ", 1, 0)] if prefix else []))
    return tok


def _add_marked(tok: Tokenizer, tokens: list[str], types: list[int], byte_level: bool) -> None:
    """Control tokens as special tokens, user-defined ones as added tokens: matched whole. A
    control token spelled outside the byte alphabet of a byte-level vocabulary is a llama.cpp
    mislabel and is left out, as transformers does."""
    control = [t for t, k in zip(tokens, types)
               if k == CONTROL and (not byte_level or set(t) <= BYTE_ALPHABET)]
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in control])
    known = tok.get_vocab()
    tok.add_tokens([AddedToken(t, normalized=False, special=False)
                    for t, k in zip(tokens, types) if k == USER_DEFINED and t in known])


def _bos_eos(tok: Tokenizer, meta: dict[str, Any], tokens: list[str], byte_level: bool,
             bos_default: bool) -> None:
    """BOS before / EOS after each text as ``add_bos_token`` / ``add_eos_token`` say."""
    def marked(key: str, flag: str, default: bool) -> str | None:
        i, on = meta.get(f"tokenizer.ggml.{key}"), meta.get(f"tokenizer.ggml.{flag}", default)
        return tokens[i] if on and isinstance(i, int) and 0 <= i < len(tokens) else None

    bos = marked("bos_token_id", "add_bos_token", bos_default)
    eos = marked("eos_token_id", "add_eos_token", False)
    steps = [processors.ByteLevel(trim_offsets=False)] if byte_level else []
    if bos or eos:
        b, e = (f"{bos} " if bos else ""), (f" {eos}" if eos else "")
        specials = [(t, tokens.index(t)) for t in dict.fromkeys(x for x in (bos, eos) if x)]
        steps.append(processors.TemplateProcessing(
            single=f"{b}$A:0{e}", pair=f"{b}$A:0{e} {b}$B:1{e}",
            special_tokens=specials))
    tok.post_processor = (processors.Sequence(steps) if len(steps) > 1
                          else steps[0] if steps else None)


def gguf_tokenizer(meta: dict[str, Any]) -> Tokenizer:
    """The tokenizer a GGUF file's metadata describes (see the module docstring)."""
    model = meta.get("tokenizer.ggml.model")
    if model not in ("gpt2", "llama"):
        raise TokenizerError(f"GGUF tokenizer model {model!r} (tokenizer.ggml.model) is not "
                             "supported; supported: 'gpt2' (byte-level BPE), 'llama' "
                             "(SentencePiece)")
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    types = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    byte_level = model == "gpt2"
    tok = _bpe_gguf(meta) if byte_level else _spm_gguf(meta)
    _add_marked(tok, tokens, types, byte_level)
    _bos_eos(tok, meta, tokens, byte_level, bos_default=not byte_level)  # as transformers
    return tok
