"""SentencePiece model files (``tokenizer.model``, ``spiece.model``, Marian's ``source.spm``)
rebuilt as ``tokenizers`` tokenizers that give the ids transformers gives for the same files.

The ``.model`` file is a protobuf ``ModelProto``; the few fields used (pieces with scores and
types, the model type, byte fallback, the unknown id, the normalizer spec) are read by a small
wire-format reader, so neither protobuf nor transformers is needed at run time.

Three layouts, as transformers (v5) builds them:

- **Llama** (:func:`llama_tokenizer`, LlamaTokenizer): BPE with byte fallback, merges recovered
  from the piece scores, no normalizer, ``Metaspace`` turning spaces into ``▁`` and adding one
  ``▁`` before the text (before every chunk between special tokens when ``legacy``); BOS
  before / EOS after as ``add_bos_token`` / ``add_eos_token`` say.
- **T5** (:func:`t5_tokenizer`, T5Tokenizer): Unigram over the pieces plus ``extra_ids``
  sentinels ``<extra_id_N>`` (highest N first), the file's precompiled normalization map,
  text split at whitespace, ``▁`` before every word, ``</s>`` after each text.
- **Marian** (:func:`marian_tokenizer`, MarianTokenizer): the source side's Unigram pieces
  under the ids of ``vocab.json``, ``</s>`` after each text.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from tokenizers import (
    AddedToken,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)

from ..errors import TokenizerError

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6  # SentencePiece types
SPACE = "\u2581"
HIDDEN = "\uffff"
"""Marks, in a Marian tokenizer, the pieces of vocab.json the source model cannot produce: a
noncharacter, so no text reaches them; the decoder removes it."""


@dataclass
class SpmModel:
    """The parts of a SentencePiece ``ModelProto`` a tokenizer is built from."""

    pieces: list[tuple[str, float, int]]
    """(piece, score, type) by id."""
    unigram: bool = True
    """Model type: Unigram (True) or BPE (False)."""
    byte_fallback: bool = False
    """Unknown characters become ``<0xNN>`` byte pieces."""
    unk_id: int = 0
    """The id of the unknown piece."""
    add_dummy_prefix: bool = True
    """A space is added before the text."""
    remove_extra_whitespaces: bool = True
    """Leading, trailing and repeated spaces are dropped."""
    charsmap: bytes = b""
    """The precompiled normalization map (empty: the identity)."""


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[i]
        value |= (b & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if b < 0x80:
            return value, i


def _fields(buf: bytes):
    """(field number, value) for each field of one protobuf message: ints for varints, bytes
    for length-delimited fields, raw bytes for fixed-width ones."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, i = buf[i:i + size], i + size
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i:i + size], i + size
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if i > len(buf):
            raise ValueError("truncated field")
        yield number, value


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def parse_spm(data: bytes) -> SpmModel:
    """The :class:`SpmModel` in the bytes of a ``.model`` file (ValueError when malformed)."""
    out = SpmModel(pieces=[])
    for number, value in _fields(data):
        if number == 1:  # SentencePiece: piece, score, type
            piece, score, kind = "", 0.0, NORMAL
            for n, v in _fields(value):
                if n == 1:
                    piece = v.decode("utf-8")
                elif n == 2:
                    score = struct.unpack("<f", v)[0]
                elif n == 3:
                    kind = v
            out.pieces.append((piece, score, kind))
        elif number == 2:  # TrainerSpec
            for n, v in _fields(value):
                if n == 3:
                    out.unigram = v == 1
                    if v not in (1, 2):
                        raise ValueError(f"model type {v} (word/char) is not Unigram or BPE")
                elif n == 35:
                    out.byte_fallback = bool(v)
                elif n == 40:
                    out.unk_id = _signed(v)
        elif number == 3:  # NormalizerSpec
            for n, v in _fields(value):
                if n == 2:
                    out.charsmap = bytes(v)
                elif n == 3:
                    out.add_dummy_prefix = bool(v)
                elif n == 4:
                    out.remove_extra_whitespaces = bool(v)
    if not out.pieces or not 0 <= out.unk_id < len(out.pieces):
        raise ValueError("no pieces, or the unknown id is not one of them")
    return out


def read_spm(path: Path) -> SpmModel:
    """The SentencePiece model in ``path``; an unreadable file is one TokenizerError."""
    try:
        return parse_spm(Path(path).read_bytes())
    except (OSError, ValueError, UnicodeDecodeError, struct.error) as e:
        raise TokenizerError(f"{path} cannot be read as a SentencePiece model ({e}); is it a "
                             "SentencePiece .model file?") from None


def spm_merges(pieces: list[str], scores: list[float]) -> list[tuple[str, str]]:
    """BPE merges recovered from a SentencePiece vocabulary: every split of a piece into two
    pieces, best score first (ties: shorter left piece, then shorter right piece, then file
    order), exactly as transformers' ``generate_merges`` orders them."""
    vocab = {t: i for i, t in enumerate(pieces)}
    found = []
    for piece, score in dict(zip(pieces, scores)).items():
        local = [(piece[:k], piece[k:], score) for k in range(1, len(piece))
                 if piece[:k] in vocab and piece[k:] in vocab]
        found.extend(sorted(local, key=lambda m: (vocab[m[0]], vocab[m[1]])))
    found.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(a, b) for a, b, _ in found]


def _add_specials(tok: Tokenizer, model: SpmModel, specials: list[str]) -> None:
    """Control pieces and the named ``specials`` (in the vocabulary) as special tokens, user
    defined pieces as added tokens: each matched whole in the raw text."""
    known = tok.get_vocab()
    names = [p for p, _, k in model.pieces if k == CONTROL] + [s for s in specials if s in known]
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True)
                            for t in dict.fromkeys(names)])
    tok.add_tokens([AddedToken(p, normalized=False, special=False)
                    for p, _, k in model.pieces if k == USER_DEFINED])


def _ends(tok: Tokenizer, bos: str | None, eos: str | None) -> None:
    """BOS before / EOS after each text (None: not added), as TemplateProcessing."""
    if not bos and not eos:
        tok.post_processor = None
        return
    for name in (bos, eos):
        if name and tok.token_to_id(name) is None:
            raise TokenizerError(f"the special token {name!r} is not in the vocabulary")
    b, e = (f"{bos}:0 " if bos else ""), (f" {eos}:0" if eos else "")
    pair = f"{b}$A:0{e} {b.replace(':0', ':1')}$B:1{e.replace(':0', ':1')}"
    tok.post_processor = processors.TemplateProcessing(
        single=f"{b}$A:0{e}", pair=pair,
        special_tokens=[(t, tok.token_to_id(t)) for t in dict.fromkeys(x for x in (bos, eos) if x)])


def llama_tokenizer(model: SpmModel, *, bos: str | None, eos: str | None,
                    specials: list[str], legacy: bool = False,
                    add_prefix_space: bool = True) -> Tokenizer:
    """A ``tokenizer.model`` as transformers' LlamaTokenizer builds it (module docstring);
    ``bos``/``eos``: the tokens put around each text (None: none)."""
    pieces = [p for p, _, _ in model.pieces]
    merges = spm_merges(pieces, [s for _, s, _ in model.pieces])
    tok = Tokenizer(models.BPE({p: i for i, p in enumerate(pieces)}, merges, fuse_unk=True,
                               byte_fallback=True, unk_token=pieces[model.unk_id]))
    scheme = ("always" if legacy else "first") if add_prefix_space else "never"
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme=scheme,
                                                 split=False)
    steps = [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    tok.decoder = decoders.Sequence(steps + ([decoders.Strip(" ", 1, 0)] if add_prefix_space
                                             else []))
    _add_specials(tok, model, specials)
    _ends(tok, bos, eos)
    return tok


def _unigram_text(tok: Tokenizer, model: SpmModel) -> None:
    """T5's text handling: the precompiled map, words split at whitespace, ``▁`` before each."""
    if model.charsmap:
        tok.normalizer = normalizers.Precompiled(model.charsmap)
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="always", split=True)])
    tok.decoder = decoders.Metaspace(replacement=SPACE, prepend_scheme="always", split=True)


def t5_tokenizer(model: SpmModel, *, extra_ids: int, specials: list[str],
                 eos: str | None = "</s>") -> Tokenizer:
    """An ``spiece.model`` as transformers' T5Tokenizer builds it (module docstring)."""
    if not model.unigram:
        raise TokenizerError("a T5 tokenizer needs a Unigram SentencePiece model; this one is "
                             "BPE (a Llama-style tokenizer.model?)")
    vocab = [(p, s) for p, s, _ in model.pieces]
    sentinels = [f"<extra_id_{i}>" for i in range(extra_ids - 1, -1, -1)]
    vocab += [(t, 0.0) for t in sentinels]
    tok = Tokenizer(models.Unigram(vocab, unk_id=model.unk_id, byte_fallback=False))
    _unigram_text(tok, model)
    _add_specials(tok, model, [*specials, *sentinels[::-1]])
    _ends(tok, None, eos)
    return tok


def marian_tokenizer(model: SpmModel, vocab: dict[str, int], *, specials: list[str],
                     eos: str = "</s>", where: str = "source.spm") -> Tokenizer:
    """Marian's source ``.spm`` under the ids of ``vocab.json``, as MarianTokenizer encodes:
    every normal piece of the model must be in ``vocab.json`` (else MarianTokenizer maps it to
    <unk>, which no ``tokenizers`` model can do: refused). Entries of vocab.json that the source
    model lacks (target-side pieces) keep their ids, hidden from encoding (:data:`HIDDEN`)."""
    if not model.unigram:
        raise TokenizerError(f"{where} is a BPE SentencePiece model; Marian models use Unigram")
    ids = sorted(vocab.values())
    if ids != list(range(len(ids))):
        raise TokenizerError("vocab.json ids must be 0..N-1, each once")
    missing = [p for p, _, k in model.pieces if k == NORMAL and p not in vocab]
    if missing:
        raise TokenizerError(
            f"{len(missing)} pieces of {where} (e.g. {missing[0]!r}) are not in vocab.json; "
            "MarianTokenizer maps them to <unk>, which a tokenizer.json cannot express exactly")
    scores = {p: s for p, s, k in model.pieces if k == NORMAL}
    floor = min(scores.values(), default=0.0)
    unk = model.pieces[model.unk_id][0]
    codes = [p for p in vocab if p.startswith(">>") and p.endswith("<<")]
    named = {t for t in (*specials, eos, unk, *codes) if t in vocab}
    if unk not in vocab or eos not in vocab:
        raise TokenizerError(f"vocab.json must hold {unk!r} and {eos!r}")
    table = [(p, scores[p]) if p in scores else (p, 0.0) if p in named else (HIDDEN + p, floor)
             for p, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    tok = Tokenizer(models.Unigram(table, unk_id=vocab[unk], byte_fallback=False))
    _unigram_text(tok, model)
    tok.decoder = decoders.Sequence([decoders.Replace(HIDDEN, ""), tok.decoder])
    _add_specials(tok, SpmModel(pieces=[]), sorted(named - set(codes), key=vocab.get))
    tok.add_tokens([AddedToken(c, normalized=False, special=False) for c in codes])
    _ends(tok, None, eos)
    return tok
